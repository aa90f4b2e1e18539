"""Clustering runs: start, run and cancel a clustering of a project's traces (the parameters and
filters are checked by run_params.py; a finished run's clusters are edited by cluster_edits.py).

The pipeline (`run_execute`, called by the Celery task datasets.tasks.cluster_run):
selecting (the newest traces matching the run's filters, the engine's own calls left out) →
embedding (MiniLM through the ClickHouse cache: a prompt is embedded once; and a sample with the
grouping model, when one is configured) → clustering (UMAP + HDBSCAN, datasets/clustering.py) →
summarizing (keywords, representatives, centroids; identity matched with the previous finished
run by member overlap) → naming (the namer alias, falling back
to keywords) → saving (Cluster rows, one assignment row per trace, per-cluster model aggregates).
Progress and the phase are written to the run row; a cancel request is honoured between phases
and embedding batches; any failure ends the run `failed` with the reason in `message`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from gateway.models import Project
from opentracy_site import progress as job_progress

from . import cluster_store, clustering, embedder, embedding_cache, naming, prompts
from .cluster_edits import clusters_refresh, draft_clusters, plural, resolve
from .models import Cluster, ClusteringRun
from .run_params import filters_clean, filters_parse, params_clean, with_grouping

log = logging.getLogger(__name__)

# Share of the progress bar at the start of each phase.
PHASES = {"selecting": 0.0, "embedding": 0.05, "clustering": 0.6, "summarizing": 0.8, "naming": 0.85, "saving": 0.95}


class Cancelled(Exception):
    pass


class RunFailed(Exception):
    """A failure people can act on: the message is shown as is."""


def run_create(*, project: Project, user: Any, filters: dict[str, Any], params: dict[str, Any]) -> ClusteringRun:
    """A queued run; the Celery task starts once the transaction commits."""
    from .tasks import cluster_run

    engine = {"embedding_model": embedder.DEFAULT_MODEL, "grouping_model": embedder.grouping_name()}
    clean = params_clean({**engine, **params})
    if clean["grouping_model"] != engine["grouping_model"]:
        grouping = engine["grouping_model"] or "no other model"
        raise ValidationError(
            {"grouping_model": f"This engine groups prompts with {grouping} (OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR)."}
        )
    run = ClusteringRun.objects.create(
        project=project,
        created_by=user if getattr(user, "pk", None) and not hasattr(user, "api_key") else None,
        filters=filters_clean(filters),
        params=clean,
    )
    transaction.on_commit(lambda: cluster_run.delay(run.pk))
    return run


def run_cancel(*, run: ClusteringRun) -> ClusteringRun:
    """A queued run is cancelled at once; a running one at its next phase or embedding batch."""
    if run.finished:
        raise ValidationError(f"The run already finished ({run.status}).")
    job_progress.cancel(run, "clustering", at_once=[ClusteringRun.Status.QUEUED])
    return run


def _set(run: ClusteringRun, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(run, name, value)
    ClusteringRun.objects.filter(pk=run.pk).update(**fields)
    job_progress.publish("clustering", run.pk, **fields)


def _phase(run: ClusteringRun, phase: str) -> None:
    _check_cancel(run)
    log.info("clustering run %s: %s", run.pk, phase)  # the log's timestamps time each phase
    _set(run, phase=phase, progress=PHASES[phase])


def _check_cancel(run: ClusteringRun) -> None:
    if ClusteringRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        raise Cancelled()


def run_execute(*, run_id: int) -> ClusteringRun | None:
    """Run a queued run to its end (done, failed or cancelled). None when the run is not queued
    (already taken by another worker, cancelled, finished): the status guard of the task."""
    claimed = ClusteringRun.objects.filter(pk=run_id, status=ClusteringRun.Status.QUEUED).update(
        status=ClusteringRun.Status.RUNNING, started_at=timezone.now(), phase="selecting", progress=0.0
    )
    if not claimed:
        return None
    job_progress.publish("clustering", run_id, status="running", phase="selecting", progress=0.0)
    run = ClusteringRun.objects.select_related("project").get(pk=run_id)
    try:
        _pipeline(run)
    except Cancelled:
        _discard(run)
        note = f"Cancelled during {run.phase or 'start-up'}."
        _set(run, status=ClusteringRun.Status.CANCELLED, finished_at=timezone.now(), message=note)
    except RunFailed as exc:
        _discard(run)
        _set(run, status=ClusteringRun.Status.FAILED, finished_at=timezone.now(), message=str(exc))
    except Exception as exc:  # any failure ends the run with its reason, never a stuck row
        log.exception("clustering run %s failed", run.pk)
        _discard(run)
        reason = f"Failed during {run.phase or 'start-up'}: {type(exc).__name__}: {exc}"
        _set(run, status=ClusteringRun.Status.FAILED, finished_at=timezone.now(), message=reason[:2000])
    return run


def _discard(run: ClusteringRun) -> None:
    Cluster.objects.filter(run=run).delete()


def _pipeline(run: ClusteringRun) -> None:
    try:
        params = params_clean(run.params)
    except ValidationError as exc:
        raise RunFailed(" ".join(exc.messages)) from exc
    notes: list[str] = []
    # -- selecting
    _phase(run, "selecting")
    filters = filters_parse(run.filters)
    rows = cluster_store.select_traces(project_id=run.project_id, filters=filters, limit=params["max_traces"])
    texts, cut = prompts.prompts_for([r.request_messages for r in rows], params["prompt_fields"])
    keep = [i for i, t in enumerate(texts) if t]
    empty = len(rows) - len(keep)
    if empty:
        notes.append(f"{plural(empty, 'trace')} with an empty prompt {'was' if empty == 1 else 'were'} left out.")
    if len(rows) == params["max_traces"]:
        notes.append(f"Only the newest {len(rows):,} matching traces were clustered.")
    if len(keep) < clustering.MIN_POINTS:
        found = f"{plural(len(keep), 'trace')} with a prompt match{'es' if len(keep) == 1 else ''} the filters"
        raise RunFailed(
            f"Too few traces: {found}; clustering needs at least {clustering.MIN_POINTS}. "
            "Widen the time window or the filters." + (f" {notes[0]}" if empty else "")
        )
    ids = [rows[i].trace_id for i in keep]
    texts = [texts[i] for i in keep]
    cut = [cut[i] for i in keep]
    newest = max(r.timestamp for r in rows)

    # -- embedding
    _phase(run, "embedding")
    grouping_model = params["grouping_model"]
    cparams = with_grouping(
        clustering.ClusterParams(min_cluster_size=params["min_cluster_size"], reduction=params["reduction"]),
        grouping_model,
    )
    sample = clustering.fit_sample(len(texts), cparams)  # what the grouping model embeds
    share = 1.0  # of the embedding phase's progress that MiniLM's pass takes
    if grouping_model:  # loads it: a bad directory fails the run before minutes of MiniLM
        share = len(texts) / (len(texts) + len(sample) * embedder.relative_cost(grouping_model))
    span = PHASES["clustering"] - PHASES["embedding"]
    embedded = _embed(run, texts, embedder.DEFAULT_MODEL, PHASES["embedding"], span * share)
    over = embedding_cache.truncated_by_model(texts)
    truncated = sum(1 for t, c in zip(texts, cut, strict=True) if c or t in over)
    if truncated:
        notes.append(f"{plural(truncated, 'prompt')} {'was' if truncated == 1 else 'were'} truncated for embedding.")
    done = f"Embedded {plural(embedded.new, 'new prompt')} ({embedded.cached:,} cached) with {embedder.DEFAULT_MODEL}"
    grouping = None
    if grouping_model:
        start = PHASES["embedding"] + span * share
        grouped = _embed(run, [texts[i] for i in sample], grouping_model, start, span * (1 - share))
        grouping = grouped.vectors
        which = "them" if len(sample) == len(texts) else f"a sample of {len(sample):,}"
        done += f", and grouped {which} with {grouping_model} ({plural(grouped.new, 'new embedding')})"
        if len(sample) < len(texts):
            done += f"; {embedder.DEFAULT_MODEL} placed the rest"
    notes.append(done + ".")

    # -- clustering
    _phase(run, "clustering")
    try:
        result = clustering.cluster(embedded.vectors, cparams, grouping=grouping)
    except ValueError as exc:
        raise RunFailed(f"Clustering found nothing: {exc}.") from exc

    # -- summarizing
    _phase(run, "summarizing")
    drafts = draft_clusters(run, ids, texts, embedded.vectors, result)
    _inherit(run, drafts)

    # -- naming
    _phase(run, "naming")
    to_name = [d for d in drafts.values() if not d["name"]]
    outcome = naming.name_clusters(
        project=run.project,
        alias=params["namer"],
        items=[naming.ToName(d["label"], d["keywords"], [r["prompt"] for r in d["representatives"]]) for d in to_name],
        should_stop=lambda: ClusteringRun.objects.filter(pk=run.pk, cancel_requested=True).exists(),
    )
    _check_cancel(run)
    for d in to_name:
        d["name"], d["description"], d["name_source"] = outcome.names[d["label"]]
    if outcome.note:
        notes.append(outcome.note)

    # -- saving
    _phase(run, "saving")
    labels = result.labels
    with transaction.atomic():
        by_label = {
            label: Cluster.objects.create(project_id=run.project_id, run=run, **d) for label, d in drafts.items()
        }
    centroid_of = {int(c): result.model.vectors[j] for j, c in enumerate(result.model.ids)}
    rows_out = []
    for i, trace_id in enumerate(ids):
        label = int(labels[i])
        if label == clustering.NOISE:
            dist = float(1.0 - (result.model.vectors @ embedded.vectors[i]).max()) if len(result.model.ids) else 1.0
            rows_out.append((trace_id, 0, dist))
        else:
            rows_out.append((trace_id, by_label[label].pk, float(1.0 - centroid_of[label] @ embedded.vectors[i])))
    cluster_store.assignments_add(project_id=run.project_id, run_id=run.pk, rows=rows_out, source="run")
    clusters_refresh(run=run)
    noise = int((labels == clustering.NOISE).sum())
    head = f"Clustered {len(ids):,} prompts into {plural(len(drafts), 'cluster')} ({noise:,} left unclustered)."
    _set(
        run,
        status=ClusteringRun.Status.DONE,
        phase="done",
        progress=1.0,
        finished_at=timezone.now(),
        trace_count=len(ids),
        noise_count=noise,
        cluster_count=len(drafts),
        assigned_until=newest,
        message=" ".join([head, *notes]),
    )


def _embed(
    run: ClusteringRun, texts: list[str], model: str, start: float, span: float
) -> embedding_cache.CachedEmbeddings:
    """`model`'s vectors for `texts` through the cache, moving the run's progress from start to
    start + span and stopping when the run is cancelled."""
    try:
        return embedding_cache.embeddings_for(
            texts,
            model=model,
            on_progress=lambda f: _set(run, progress=start + span * f),
            should_stop=lambda: ClusteringRun.objects.filter(pk=run.pk, cancel_requested=True).exists(),
        )
    except embedding_cache.Stopped:
        raise Cancelled() from None


def _inherit(run: ClusteringRun, drafts: dict[int, dict[str, Any]]) -> None:
    """Clusters that overlap one of the previous finished run's (Jaccard >= 0.5 on member traces)
    keep its identity, its worth-distilling flag and, when a person or the namer named it, its name."""
    new_members = {label: d.pop("_members") for label, d in drafts.items()}
    previous = (
        ClusteringRun.objects.filter(project_id=run.project_id, status=ClusteringRun.Status.DONE)
        .exclude(pk=run.pk)
        .order_by("-finished_at", "-id")
        .first()
    )
    if previous is None:
        return
    old = {c.pk: c for c in Cluster.objects.filter(run=previous)}
    merged_into = {pk: c.merged_into_id for pk, c in old.items()}
    old_members: dict[int, set[str]] = {}
    for trace_id, cid in cluster_store.run_memberships(project_id=run.project_id, run_id=previous.pk).items():
        if cid in old:
            old_members.setdefault(resolve(cid, merged_into), set()).add(trace_id)
    for label, old_pk in clustering.match_clusters(old_members, new_members).items():
        source, d = old[old_pk], drafts[label]
        d["identity"] = source.identity
        d["worth_distilling"] = source.worth_distilling
        if source.name_source in (Cluster.NameSource.PERSON, Cluster.NameSource.LLM) and source.name:
            d["name"], d["description"], d["name_source"] = source.name, source.description, source.name_source
