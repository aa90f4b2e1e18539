"""Reads for clusters and datasets. Cluster membership lives in ClickHouse (append-only
`cluster_assignments`): a trace's latest row in a run wins, and a cluster's members include those
of the clusters merged into it."""

from __future__ import annotations

from django.db.models import QuerySet

from gateway.models import Project
from opentracy_site import clickhouse

from .ch_sql import ASSIGNMENTS_TABLE
from .models import Cluster, ClusteringRun, Dataset


def absorbed_ids(cluster: Cluster) -> list[int]:
    """The cluster's id and those of every cluster merged into it, at any depth."""
    ids, frontier = [cluster.pk], [cluster.pk]
    while frontier:
        frontier = list(Cluster.objects.filter(merged_into_id__in=frontier).values_list("pk", flat=True))
        ids += frontier
    return ids


def cluster_member_ids(*, cluster: Cluster, after: str | None = None, limit: int | None = None) -> list[str]:
    """Member trace ids in trace id order; `after` (a trace id) and `limit` page through them."""
    sql = (
        f"SELECT trace_id FROM {ASSIGNMENTS_TABLE} WHERE project_id = {{p:UInt64}} AND run_id = {{r:UInt64}}"  # noqa: S608
        " GROUP BY trace_id HAVING argMax(cluster_id, assigned_at) IN {ids:Array(UInt64)}"
    )
    params: dict[str, object] = {"p": cluster.project_id, "r": cluster.run_id, "ids": absorbed_ids(cluster)}
    if after:
        sql += " AND trace_id > {after:UUID}"
        params["after"] = after
    sql += " ORDER BY trace_id"
    if limit is not None:
        sql += " LIMIT {limit:UInt32}"
        params["limit"] = limit
    return [str(r[0]) for r in clickhouse.query(sql, params)[1]]


def runs_for_project(*, project: Project) -> QuerySet[ClusteringRun]:
    return ClusteringRun.objects.filter(project=project)


def run_get(*, project: Project, pk: int) -> ClusteringRun | None:
    return ClusteringRun.objects.filter(project=project, pk=pk).first()


def cluster_get(*, project: Project, pk: int) -> Cluster | None:
    return Cluster.objects.filter(project=project, pk=pk).first()


def dataset_get(*, project: Project, pk: int) -> Dataset | None:
    return Dataset.objects.filter(project=project, pk=pk).first()
