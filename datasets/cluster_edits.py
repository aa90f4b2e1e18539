"""Services on a finished run's clusters: refresh their figures, rename, flag, merge and split
them, and place traces that arrived after the run in them without a full re-run. Also the cluster
drafts and merge resolution the pipeline (runs.py) shares with them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction

from . import cluster_store, clustering, embedder, embedding_cache, naming, prompts
from .models import Cluster, ClusteringRun
from .run_params import filters_parse, params_clean, with_grouping

N_REPR = 5


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def draft_clusters(
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


def resolve(cluster_id: int, merged_into: dict[int, int | None]) -> int:
    """The active cluster a (possibly merged) cluster's members count toward."""
    seen = set()
    while merged_into.get(cluster_id) and cluster_id not in seen:
        seen.add(cluster_id)
        cluster_id = merged_into[cluster_id] or cluster_id
    return cluster_id


def clusters_refresh(*, run: ClusteringRun) -> None:
    """Size, cost, error rate and models served of the run's clusters from their current member
    traces (a merged cluster's members count toward the cluster it was merged into)."""
    clusters = list(Cluster.objects.filter(run=run))
    merged_into = {c.pk: c.merged_into_id for c in clusters}
    stats = cluster_store.model_stats(project_id=run.project_id, run_id=run.pk)
    per: dict[int, dict[str, dict[str, Any]]] = {}
    for cid, models in stats.items():
        target = per.setdefault(resolve(cid, merged_into), {})
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
    """Re-cluster the cluster's members (their cached embeddings; grouped by the grouping model when
    one is configured) with parameters for a small set; every member goes to its nearest child.
    ValidationError when it does not split in two or more."""
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
            f"This cluster has {plural(len(ids), 'member')}; splitting needs at least {clustering.MIN_POINTS}."
        )
    vectors = embedding_cache.embeddings_for(texts).vectors
    grouping_model = embedder.grouping_name()  # the engine's now: a split only regroups, nothing is placed by it
    split_params = with_grouping(clustering.ClusterParams(
        n_neighbors=min(15, max(5, len(ids) // 4)), min_cluster_size=max(5, len(ids) // 10), min_samples=2,
        reduction=params["reduction"],
    ), grouping_model)  # fmt: skip
    grouping = None
    if grouping_model:
        sample = clustering.fit_sample(len(ids), split_params)
        grouping = embedding_cache.embeddings_for([texts[i] for i in sample], model=grouping_model).vectors
    result = None
    selections: tuple[Literal["eom", "leaf"], ...] = ("eom", "leaf")
    for selection in selections:  # eom first (whole intents); leaf finds finer groups in a tight cluster
        cparams = replace(split_params, selection=selection)
        try:
            result = clustering.cluster(vectors, cparams, grouping=grouping)
        except ValueError:
            continue
        if len(result.model.ids) >= 2:
            break
    if result is None or len(result.model.ids) < 2:
        raise ValidationError("This cluster does not split: its prompts form one group.")
    # Every member goes to its nearest child: a split partitions its parent, it leaves nothing out.
    labels = np.asarray(result.model.ids[(vectors @ result.model.vectors.T).argmax(axis=1)], dtype=np.int64)
    drafts = draft_clusters(run, ids, texts, vectors, clustering.Clustering(
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
        empty = clustering.Centroids(np.zeros(0, np.int64), np.zeros((0, embedder.dimensions()), np.float32),
                                     np.zeros(0, np.float32))  # fmt: skip
        return empty, {}
    model = clustering.Centroids(
        ids=np.array([c.pk for c in clusters], dtype=np.int64),
        vectors=np.stack([np.frombuffer(bytes(c.centroid), dtype=np.float32) for c in clusters]),
        radii=np.array([c.radius for c in clusters], dtype=np.float32),
    )
    return model, {c.pk: resolve(c.pk, merged_into) for c in clusters}


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
