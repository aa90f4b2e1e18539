"""ClickHouse reads and writes of the clustering services: the traces a run clusters, assignment
rows (append-only, latest row per (run, trace) wins, cluster_id 0 = unclustered) and per-cluster
aggregates over member traces. Parameters are always bound by the driver."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.internal import INTERNAL_METADATA_KEY
from opentracy_site import clickhouse
from traces.ch_sql import TRACES_TABLE
from traces.filters import TraceFilters, where

from .ch_sql import ASSIGNMENT_COLUMNS, ASSIGNMENTS_TABLE

MAX_TRACES = 100_000  # a run clusters the newest 100k matching traces (embedding ~3 min cold, UMAP ~1 min)
IDS_CHUNK = 10_000  # trace ids per IN list


@dataclass(frozen=True)
class TraceRow:
    trace_id: str
    timestamp: datetime
    request_messages: str


def select_traces(
    *, project_id: int, filters: TraceFilters, after: datetime | None = None, limit: int = MAX_TRACES
) -> list[TraceRow]:
    """The newest `limit` traces matching the filters, the engine's own calls (naming, judging:
    metadata opentracy_internal) left out; `after`: only traces newer than that."""
    clauses, params = where(project_id, filters)
    clauses.append("NOT mapContains(metadata, {internal_key:String})")
    params["internal_key"] = INTERNAL_METADATA_KEY
    if after is not None:
        clauses.append("timestamp > {after:DateTime64(3, 'UTC')}")
        params["after"] = after
    params["limit"] = limit
    _cols, rows = clickhouse.query(
        f"SELECT trace_id, timestamp, request_messages FROM {TRACES_TABLE} WHERE {' AND '.join(clauses)}"  # noqa: S608
        " ORDER BY timestamp DESC, trace_id DESC LIMIT {limit:UInt32}",
        params,
    )
    return [TraceRow(str(t), ts if ts.tzinfo else ts.replace(tzinfo=UTC), m) for t, ts, m in rows]


def request_messages_of(*, project_id: int, trace_ids: Sequence[str]) -> dict[str, str]:
    """trace id → request_messages, for the given traces of the project."""
    out: dict[str, str] = {}
    for start in range(0, len(trace_ids), IDS_CHUNK):
        _cols, rows = clickhouse.query(
            f"SELECT trace_id, any(request_messages) FROM {TRACES_TABLE}"  # noqa: S608
            " WHERE project_id = {p:UInt64} AND trace_id IN {ids:Array(UUID)} GROUP BY trace_id",
            {"p": project_id, "ids": list(trace_ids[start : start + IDS_CHUNK])},
        )
        out.update((str(t), m) for t, m in rows)
    return out


def assignments_add(*, project_id: int, run_id: int, rows: Iterable[tuple[str, int, float]], source: str) -> int:
    """Append (trace_id, cluster_id, distance) rows; 0 = unclustered. Returns how many."""
    now = datetime.now(UTC)
    data = [(project_id, run_id, uuid.UUID(t), int(c), float(d), source, now) for t, c, d in rows]
    for start in range(0, len(data), 50_000):
        clickhouse.insert(ASSIGNMENTS_TABLE, data[start : start + 50_000], ASSIGNMENT_COLUMNS)
    return len(data)


def run_memberships(*, project_id: int, run_id: int) -> dict[str, int]:
    """trace id → its current cluster id in the run (the latest row wins; 0 = unclustered)."""
    _cols, rows = clickhouse.query(
        f"SELECT trace_id, argMax(cluster_id, assigned_at) FROM {ASSIGNMENTS_TABLE}"  # noqa: S608
        " WHERE project_id = {p:UInt64} AND run_id = {r:UInt64} GROUP BY trace_id",
        {"p": project_id, "r": run_id},
    )
    return {str(t): int(c) for t, c in rows}


def model_stats(*, project_id: int, run_id: int) -> dict[int, list[dict[str, Any]]]:
    """cluster id → [{model, requests, cost_usd, errors}] over its current member traces, the model
    being the one that answered (else the one asked); errors are statuses >= 400."""
    _cols, rows = clickhouse.query(
        f"""
        SELECT a.cid, if(t.resolved_model != '', t.resolved_model, t.requested_model) AS model,
               count() AS requests, sum(ifNull(t.cost_total_usd, 0)) AS cost, countIf(t.status >= 400) AS errors
        FROM (
            SELECT trace_id, argMax(cluster_id, assigned_at) AS cid FROM {ASSIGNMENTS_TABLE}
            WHERE project_id = {{p:UInt64}} AND run_id = {{r:UInt64}} GROUP BY trace_id
        ) AS a
        INNER JOIN (
            SELECT trace_id, resolved_model, requested_model, cost_total_usd, status FROM {TRACES_TABLE}
            WHERE project_id = {{p:UInt64}} AND trace_id IN (
                SELECT trace_id FROM {ASSIGNMENTS_TABLE} WHERE project_id = {{p:UInt64}} AND run_id = {{r:UInt64}}
            )
        ) AS t ON a.trace_id = t.trace_id
        WHERE a.cid != 0
        GROUP BY a.cid, model
        ORDER BY requests DESC, model
        """,  # noqa: S608 (table names are constants)
        {"p": project_id, "r": run_id},
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for cid, model, requests, cost, errors in rows:
        out.setdefault(int(cid), []).append(
            {"model": model, "requests": int(requests), "cost_usd": float(cost), "errors": int(errors)}
        )
    return out
