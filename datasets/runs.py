"""Clustering services: start, run and cancel a clustering of a project's traces; rename, flag,
merge and split its clusters; place new traces in them without a full re-run.

The pipeline (`run_execute`, called by the Celery task datasets.tasks.cluster_run):
selecting (the newest traces matching the run's filters, the engine's own calls left out) →
embedding (MiniLM through the ClickHouse cache: a prompt is embedded once) → clustering (UMAP +
HDBSCAN, datasets/clustering.py) → summarizing (keywords, representatives, centroids; identity
matched with the previous finished run by member overlap) → naming (the namer alias, falling back
to keywords) → saving (Cluster rows, one assignment row per trace, per-cluster model aggregates).
Progress and the phase are written to the run row; a cancel request is honoured between phases
and embedding batches; any failure ends the run `failed` with the reason in `message`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import QueryDict
from django.utils import timezone

from gateway.models import Project
from opentracy_site import progress as job_progress
from traces.filters import FilterError, TraceFilters, parse_filters

from . import cluster_store, clustering, embedding_cache, naming, prompts
from .models import Cluster, ClusteringRun

log = logging.getLogger(__name__)

REDUCTIONS = ("umap", "pca", "none")
PARAM_NAMES = ("reduction", "min_cluster_size", "prompt_fields", "namer", "max_traces")
FILTER_NAMES = (
    "range", "since", "until", "model", "provider", "alias", "status", "api_key",
    "metadata", "metadata_key", "metadata_value", "tag", "min_cost", "min_latency_ms", "q",
)  # fmt: skip
# Share of the progress bar at the start of each phase.
PHASES = {"selecting": 0.0, "embedding": 0.05, "clustering": 0.6, "summarizing": 0.8, "naming": 0.85, "saving": 0.95}
N_REPR = 5


class Cancelled(Exception):
    pass


class RunFailed(Exception):
    """A failure people can act on: the message is shown as is."""


# ---------------------------------------------------------------- parameters and filters


def params_clean(params: dict[str, Any] | None) -> dict[str, Any]:
    """The run's parameters with defaults filled in; ValidationError naming each bad one."""
    params = dict(params or {})
    errors: dict[str, str] = {}
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        errors["params"] = f"Unknown parameter(s) {', '.join(unknown)}; use {', '.join(PARAM_NAMES)}."
    out: dict[str, Any] = {
        "reduction": params.get("reduction") or "umap",
        "min_cluster_size": params.get("min_cluster_size"),
        "prompt_fields": params.get("prompt_fields") or prompts.DEFAULT_PROMPT_FIELDS,
        "namer": params.get("namer", naming.DEFAULT_NAMER),
        "max_traces": params.get("max_traces") or cluster_store.MAX_TRACES,
    }
    if out["reduction"] not in REDUCTIONS:
        errors["reduction"] = f"Use one of {', '.join(REDUCTIONS)}."
    if out["prompt_fields"] not in prompts.PROMPT_FIELDS:
        errors["prompt_fields"] = f"Use one of {', '.join(prompts.PROMPT_FIELDS)}."
    for name, low, high in (("min_cluster_size", 2, 10_000), ("max_traces", clustering.MIN_POINTS, 100_000)):
        value = out[name]
        if value in (None, "") and name == "min_cluster_size":
            out[name] = None
            continue
        try:
            number = int(value)
            if isinstance(value, bool) or number != float(value) or not low <= number <= high:
                raise ValueError
            out[name] = number
        except (TypeError, ValueError):
            errors[name] = f"Must be an integer from {low} to {high:,}."
    namer = out["namer"]
    if not isinstance(namer, str) or len(namer) > 200:
        errors["namer"] = "Must be an alias name (at most 200 characters), or empty for keyword names."
    else:
        out["namer"] = namer.strip()
    if errors:
        raise ValidationError(errors)
    return out


def filters_clean(filters: dict[str, Any] | None) -> dict[str, str]:
    """The trace filters as strings (the traces API's query parameters); ValidationError when one
    is unknown or bad. No time bound means all time (capped at the newest max_traces traces)."""
    raw = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
    unknown = sorted(set(raw) - set(FILTER_NAMES))
    if unknown:
        raise ValidationError({"filters": f"Unknown filter(s) {', '.join(unknown)}; use {', '.join(FILTER_NAMES)}."})
    clean = {k: str(v) for k, v in raw.items()}
    filters_parse(clean)
    return clean


def filters_parse(filters: dict[str, str]) -> TraceFilters:
    query = QueryDict(mutable=True)
    for key, value in filters.items():
        query[key] = value
    try:
        return parse_filters(query, all_time=True)
    except FilterError as exc:
        raise ValidationError(exc.errors) from exc


# ---------------------------------------------------------------- runs


def run_create(*, project: Project, user: Any, filters: dict[str, Any], params: dict[str, Any]) -> ClusteringRun:
    """A queued run; the Celery task starts once the transaction commits."""
    from .tasks import cluster_run

    run = ClusteringRun.objects.create(
        project=project,
        created_by=user if getattr(user, "pk", None) and not hasattr(user, "api_key") else None,
        filters=filters_clean(filters),
        params=params_clean(params),
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


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _pipeline(run: ClusteringRun) -> None:
    params = params_clean(run.params)
    notes: list[str] = []
    # -- selecting
    _phase(run, "selecting")
    filters = filters_parse(run.filters)
    rows = cluster_store.select_traces(project_id=run.project_id, filters=filters, limit=params["max_traces"])
    texts, cut = prompts.prompts_for([r.request_messages for r in rows], params["prompt_fields"])
    keep = [i for i, t in enumerate(texts) if t]
    empty = len(rows) - len(keep)
    if empty:
        notes.append(f"{_plural(empty, 'trace')} with an empty prompt {'was' if empty == 1 else 'were'} left out.")
    if len(rows) == params["max_traces"]:
        notes.append(f"Only the newest {len(rows):,} matching traces were clustered.")
    if len(keep) < clustering.MIN_POINTS:
        found = f"{_plural(len(keep), 'trace')} with a prompt match{'es' if len(keep) == 1 else ''} the filters"
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
    span = PHASES["clustering"] - PHASES["embedding"]
    try:
        embedded = embedding_cache.embeddings_for(
            texts,
            on_progress=lambda f: _set(run, progress=PHASES["embedding"] + span * f),
            should_stop=lambda: ClusteringRun.objects.filter(pk=run.pk, cancel_requested=True).exists(),
        )
    except embedding_cache.Stopped:
        raise Cancelled() from None
    truncated = sum(1 for t, c in zip(texts, cut, strict=True) if c or t in embedded.truncated)
    if truncated:
        notes.append(f"{_plural(truncated, 'prompt')} {'was' if truncated == 1 else 'were'} truncated for embedding.")
    notes.append(
        f"Embedded {embedded.new:,} new prompt{'s' if embedded.new != 1 else ''} ({embedded.cached:,} cached)."
    )

    # -- clustering
    _phase(run, "clustering")
    cparams = clustering.ClusterParams(min_cluster_size=params["min_cluster_size"], reduction=params["reduction"])
    try:
        result = clustering.cluster(embedded.vectors, cparams)
    except ValueError as exc:
        raise RunFailed(f"Clustering found nothing: {exc}.") from exc

    # -- summarizing
    _phase(run, "summarizing")
    drafts = _drafts(run, ids, texts, embedded.vectors, result)
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
    head = f"Clustered {len(ids):,} prompts into {_plural(len(drafts), 'cluster')} ({noise:,} left unclustered)."
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


def _drafts(
    run: ClusteringRun, ids: list[str], texts: list[str], vectors: np.ndarray, result: clustering.Clustering
) -> dict[int, dict[str, Any]]:
    """Cluster fields by HDBSCAN label (names empty until matched or named)."""
    summaries = clustering.summarize(texts, vectors, result.labels, n_repr=N_REPR)
    model = result.model
    index = {int(c): j for j, c in enumerate(model.ids)}
    drafts: dict[int, dict[str, Any]] = {}
    for s in summaries:
        members = np.flatnonzero(result.labels == s.label)
        trace_of: dict[str, str] = {}
        for i in members:
            trace_of.setdefault(texts[int(i)], ids[int(i)])
        j = index.get(s.label)
        drafts[s.label] = {
            "label": s.label,
            "name": "",
            "description": "",
            "name_source": Cluster.NameSource.KEYWORDS,
            "size": s.size,
            "keywords": s.keywords,
            "representatives": [{"trace_id": trace_of[p], "prompt": p} for p in s.representatives],
            "cohesion": s.cohesion,
            "separation": s.separation,
            "centroid": model.vectors[j].astype(np.float32).tobytes() if j is not None else b"",
            "radius": float(model.radii[j]) if j is not None else 0.0,
            "_members": {ids[int(i)] for i in members},
        }
    return drafts


def _resolve(cluster_id: int, merged_into: dict[int, int | None]) -> int:
    """The active cluster a (possibly merged) cluster's members count toward."""
    seen = set()
    while merged_into.get(cluster_id) and cluster_id not in seen:
        seen.add(cluster_id)
        cluster_id = merged_into[cluster_id] or cluster_id
    return cluster_id


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
            old_members.setdefault(_resolve(cid, merged_into), set()).add(trace_id)
    for label, old_pk in clustering.match_clusters(old_members, new_members).items():
        source, d = old[old_pk], drafts[label]
        d["identity"] = source.identity
        d["worth_distilling"] = source.worth_distilling
        if source.name_source in (Cluster.NameSource.PERSON, Cluster.NameSource.LLM) and source.name:
            d["name"], d["description"], d["name_source"] = source.name, source.description, source.name_source


# ---------------------------------------------------------------- clusters


def clusters_refresh(*, run: ClusteringRun) -> None:
    """Size, cost, error rate and models served of the run's clusters from their current member
    traces (a merged cluster's members count toward the cluster it was merged into)."""
    clusters = list(Cluster.objects.filter(run=run))
    merged_into = {c.pk: c.merged_into_id for c in clusters}
    stats = cluster_store.model_stats(project_id=run.project_id, run_id=run.pk)
    per: dict[int, dict[str, dict[str, Any]]] = {}
    for cid, models in stats.items():
        target = per.setdefault(_resolve(cid, merged_into), {})
        for m in models:
            agg = target.setdefault(m["model"], {"model": m["model"], "requests": 0, "cost_usd": 0.0, "errors": 0})
            agg["requests"] += m["requests"]
            agg["cost_usd"] += m["cost_usd"]
            agg["errors"] += m["errors"]
    for c in clusters:
        if c.status != Cluster.Status.ACTIVE:
            continue
        models = sorted(per.get(c.pk, {}).values(), key=lambda m: (-m["requests"], m["model"]))
        requests = sum(m["requests"] for m in models)
        c.size = requests
        c.cost_usd = round(sum(m["cost_usd"] for m in models), 9)
        c.error_rate = sum(m["errors"] for m in models) / requests if requests else 0.0
        c.models_served = [
            {
                "model": m["model"],
                "requests": m["requests"],
                "cost_usd": round(m["cost_usd"], 9),
                "error_rate": m["errors"] / m["requests"],
            }
            for m in models
        ]
        c.save(update_fields=["size", "cost_usd", "error_rate", "models_served", "updated_at"])


def cluster_rename(*, cluster: Cluster, name: str, description: str | None = None) -> Cluster:
    name = " ".join(str(name).split())
    if not name:
        raise ValidationError({"name": "Give a name."})
    if len(name) > 200:
        raise ValidationError({"name": "At most 200 characters."})
    cluster.name, cluster.name_source = name, Cluster.NameSource.PERSON
    if description is not None:
        description = " ".join(str(description).split())
        if len(description) > 500:
            raise ValidationError({"description": "At most 500 characters."})
        cluster.description = description
    cluster.save(update_fields=["name", "description", "name_source", "updated_at"])
    return cluster


def cluster_flag(*, cluster: Cluster, worth_distilling: bool) -> Cluster:
    cluster.worth_distilling = bool(worth_distilling)
    cluster.save(update_fields=["worth_distilling", "updated_at"])
    return cluster


def cluster_merge(*, into: Cluster, other: Cluster) -> Cluster:
    """`other`'s members count toward `into` from now on (assignment rows are not rewritten: the
    membership selector follows merged_into). Both must be active clusters of the same run."""
    if into.pk == other.pk:
        raise ValidationError({"other": "A cluster cannot be merged into itself."})
    if into.run_id != other.run_id:
        raise ValidationError({"other": "Only clusters of the same run can be merged."})
    for which, c in (("into", into), ("other", other)):
        if c.status != Cluster.Status.ACTIVE:
            raise ValidationError({which: f"Cluster {c.pk} is {c.status}; only active clusters can be merged."})
    with transaction.atomic():
        other.status, other.merged_into = Cluster.Status.MERGED, into
        other.save(update_fields=["status", "merged_into", "updated_at"])
        into.keywords = list(dict.fromkeys([*into.keywords, *other.keywords]))[:12]
        into.save(update_fields=["keywords", "updated_at"])
    clusters_refresh(run=into.run)
    into.refresh_from_db()
    return into


def cluster_split(*, cluster: Cluster) -> list[Cluster]:
    """Re-cluster the cluster's members (their cached embeddings) with parameters for a small set;
    every member goes to its nearest child. ValidationError when it does not split in two or more."""
    from .selectors import cluster_member_ids

    if cluster.status != Cluster.Status.ACTIVE:
        raise ValidationError(f"Cluster {cluster.pk} is {cluster.status}; only active clusters can be split.")
    run = cluster.run
    params = params_clean(run.params)
    ids = cluster_member_ids(cluster=cluster)
    messages = cluster_store.request_messages_of(project_id=cluster.project_id, trace_ids=ids)
    ids = [t for t in ids if t in messages]
    texts, _cut = prompts.prompts_for([messages[t] for t in ids], params["prompt_fields"])
    keep = [i for i, t in enumerate(texts) if t]
    ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    if len(ids) < clustering.MIN_POINTS:
        raise ValidationError(
            f"This cluster has {_plural(len(ids), 'member')}; splitting needs at least {clustering.MIN_POINTS}."
        )
    vectors = embedding_cache.embeddings_for(texts).vectors
    result = None
    selections: tuple[Literal["eom", "leaf"], ...] = ("eom", "leaf")
    for selection in selections:  # eom first (whole intents); leaf finds finer groups in a tight cluster
        cparams = clustering.ClusterParams(
            n_neighbors=min(15, max(5, len(ids) // 4)),
            min_cluster_size=max(5, len(ids) // 10),
            min_samples=2,
            selection=selection,
            reduction=params["reduction"],
        )
        try:
            result = clustering.cluster(vectors, cparams)
        except ValueError:
            continue
        if len(result.model.ids) >= 2:
            break
    if result is None or len(result.model.ids) < 2:
        raise ValidationError("This cluster does not split: its prompts form one group.")
    # Every member goes to its nearest child: a split partitions its parent, it leaves nothing out.
    labels = np.asarray(result.model.ids[(vectors @ result.model.vectors.T).argmax(axis=1)], dtype=np.int64)
    drafts = _drafts(run, ids, texts, vectors, clustering.Clustering(
        labels, result.hdbscan_labels, result.probabilities, result.model, result.noise_before, 0.0
    ))  # fmt: skip
    outcome = naming.name_clusters(
        project=run.project,
        alias=params["namer"],
        items=[naming.ToName(k, d["keywords"], [r["prompt"] for r in d["representatives"]]) for k, d in drafts.items()],
    )
    base = (Cluster.objects.filter(run=run).order_by("-label").values_list("label", flat=True).first() or 0) + 1
    with transaction.atomic():
        children = {}
        for n, (label, d) in enumerate(sorted(drafts.items())):
            d.pop("_members")
            d["name"], d["description"], d["name_source"] = outcome.names[label]
            d["label"] = base + n
            children[label] = Cluster.objects.create(
                project_id=cluster.project_id, run=run, parent=cluster, identity=uuid.uuid4(),
                worth_distilling=cluster.worth_distilling, **d,
            )  # fmt: skip
        cluster.status = Cluster.Status.SPLIT
        cluster.save(update_fields=["status", "updated_at"])
    centroid_of = {int(c): result.model.vectors[j] for j, c in enumerate(result.model.ids)}
    rows = [
        (t, children[int(lab)].pk, float(1.0 - centroid_of[int(lab)] @ vectors[i]))
        for i, (t, lab) in enumerate(zip(ids, labels, strict=True))
    ]
    cluster_store.assignments_add(project_id=cluster.project_id, run_id=run.pk, rows=rows, source="split")
    clusters_refresh(run=run)
    return list(Cluster.objects.filter(parent=cluster).order_by("-size", "id"))


def centroids_of(*, run: ClusteringRun) -> tuple[clustering.Centroids, dict[int, int]]:
    """The run's centroids for placing new prompts (active and merged clusters; split parents give
    way to their children) and, per cluster id, the active cluster its members count toward."""
    clusters = [c for c in Cluster.objects.filter(run=run) if c.centroid and c.status != Cluster.Status.SPLIT]
    merged_into = {c.pk: c.merged_into_id for c in Cluster.objects.filter(run=run)}
    if not clusters:
        empty = clustering.Centroids(np.zeros(0, np.int64), np.zeros((0, embedding_cache.DIMENSIONS), np.float32),
                                     np.zeros(0, np.float32))  # fmt: skip
        return empty, {}
    model = clustering.Centroids(
        ids=np.array([c.pk for c in clusters], dtype=np.int64),
        vectors=np.stack([np.frombuffer(bytes(c.centroid), dtype=np.float32) for c in clusters]),
        radii=np.array([c.radius for c in clusters], dtype=np.float32),
    )
    return model, {c.pk: _resolve(c.pk, merged_into) for c in clusters}


def assign_new(*, run: ClusteringRun, progress: Callable[[float], None] | None = None) -> dict[str, int]:
    """Place the traces that arrived after the run (newer than assigned_until, same filters but the
    time window) in its clusters: nearest centroid within its radius, else unclustered. Appends
    'incremental' assignment rows, refreshes the clusters' sizes and moves assigned_until."""
    if run.status != ClusteringRun.Status.DONE:
        raise ValidationError(f"Only a finished run places new traces (this one is {run.status}).")
    params = params_clean(run.params)
    filters = filters_parse(run.filters)
    filters.since = filters.until = None
    rows = cluster_store.select_traces(
        project_id=run.project_id, filters=filters, after=run.assigned_until, limit=cluster_store.MAX_TRACES
    )
    if not rows:
        return {"assigned": 0, "unclustered": 0, "empty": 0}
    texts, _cut = prompts.prompts_for([r.request_messages for r in rows], params["prompt_fields"])
    keep = [i for i, t in enumerate(texts) if t]
    vectors = embedding_cache.embeddings_for([texts[i] for i in keep], on_progress=progress).vectors
    model, target = centroids_of(run=run)
    labels = clustering.assign_new(vectors, model) if len(keep) else np.zeros(0, np.int64)
    out = []
    if len(model.ids):
        dist = 1.0 - (vectors @ model.vectors.T).max(axis=1)
    for n, i in enumerate(keep):
        label = int(labels[n])
        cid = target.get(label, 0) if label != clustering.NOISE else 0
        out.append((rows[i].trace_id, cid, float(dist[n]) if len(model.ids) else 1.0))
    cluster_store.assignments_add(project_id=run.project_id, run_id=run.pk, rows=out, source="incremental")
    clusters_refresh(run=run)
    unclustered = sum(1 for _t, c, _d in out if c == 0)
    newest: datetime = max(r.timestamp for r in rows)
    ClusteringRun.objects.filter(pk=run.pk).update(
        assigned_until=newest,
        trace_count=run.trace_count + len(out),
        noise_count=run.noise_count + unclustered,
    )
    run.refresh_from_db()
    return {"assigned": len(out) - unclustered, "unclustered": unclustered, "empty": len(rows) - len(keep)}
