"""Reads of traces from ClickHouse, always scoped to one project."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from opentracy_site import clickhouse

from .ch_sql import ANNOTATIONS_TABLE, TRACE_COLUMNS, TRACE_LIST_COLUMNS, TRACES_TABLE
from .filters import TraceFilters, where

JSON_COLUMNS = ("request_messages", "request_params", "response_message")


def encode_cursor(timestamp: datetime, trace_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{timestamp.isoformat()}|{trace_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Raises ValueError on a cursor this API did not produce."""
    try:
        ts, _, tid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(ts), uuid.UUID(tid)
    except Exception as exc:
        raise ValueError("invalid cursor") from exc


def _as_dict(columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(columns, row, strict=True))
    out["trace_id"] = str(out["trace_id"])
    out["timestamp"] = out["timestamp"].isoformat()
    for column in JSON_COLUMNS:
        if out.get(column):
            with contextlib.suppress(orjson.JSONDecodeError):  # a body that was not JSON is kept as sent
                out[column] = orjson.loads(out[column])
    return out


def trace_list(
    *, project_id: int, filters: TraceFilters, cursor: str | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; returns (traces, next cursor or None)."""
    clauses, params = where(project_id, filters)
    if cursor:
        ts, tid = decode_cursor(cursor)
        clauses.append("(timestamp, trace_id) < ({cts:DateTime64(3, 'UTC')}, {ctid:UUID})")
        params.update(cts=ts, ctid=tid)
    params["limit"] = limit + 1
    sql = (
        f"SELECT {', '.join(TRACE_LIST_COLUMNS)} FROM {TRACES_TABLE} WHERE {' AND '.join(clauses)} "  # noqa: S608
        "ORDER BY timestamp DESC, trace_id DESC LIMIT {limit:UInt32}"
    )
    columns, rows = clickhouse.query(sql, params)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = dict(zip(columns, rows[-1], strict=True))
        next_cursor = encode_cursor(last["timestamp"], last["trace_id"])
    return _annotate(project_id, [_as_dict(columns, r) for r in rows]), next_cursor


def trace_iter(
    *, project_id: int, filters: TraceFilters, columns: list[str] | None = None, page: int = 2000
) -> Iterator[dict[str, Any]]:
    """Every matching trace, newest first, fetched a page at a time by keyset (export streams this:
    memory stays one page whatever the size of the result)."""
    names = columns or list(TRACE_COLUMNS)
    clauses, params = where(project_id, filters)
    after: list[str] = []  # the keyset condition, from the second page on
    while True:
        sql = (
            f"SELECT {', '.join(names)} FROM {TRACES_TABLE} WHERE {' AND '.join(clauses + after)} "  # noqa: S608
            "ORDER BY timestamp DESC, trace_id DESC LIMIT {limit:UInt32}"
        )
        cols, rows = clickhouse.query(sql, {**params, "limit": page})
        yield from _annotate(project_id, [_as_dict(cols, r) for r in rows])
        if len(rows) < page:
            return
        last = dict(zip(cols, rows[-1], strict=True))
        after = ["(timestamp, trace_id) < ({cts:DateTime64(3, 'UTC')}, {ctid:UUID})"]
        params.update(cts=last["timestamp"], ctid=last["trace_id"])


def _annotate(project_id: int, traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply tags and feedback added after the fact (the annotations table, latest first wins)."""
    if not traces:
        return traces
    sql = (
        f"SELECT trace_id, kind, tag, score, comment, user_id, created_at FROM {ANNOTATIONS_TABLE} "  # noqa: S608
        "WHERE project_id = {project_id:UInt64} AND trace_id IN {ids:Array(UUID)} ORDER BY created_at"
    )
    _cols, rows = clickhouse.query(sql, {"project_id": project_id, "ids": [t["trace_id"] for t in traces]})
    by_id = {t["trace_id"]: t for t in traces}
    for trace_id, kind, tag, score, comment, user_id, created_at in rows:
        trace = by_id[str(trace_id)]
        tags = trace.setdefault("tags", [])
        if kind == "tag" and tag not in tags:
            tags.append(tag)
        elif kind == "untag" and tag in tags:
            tags.remove(tag)
        elif kind == "feedback":
            trace["feedback"] = {
                "score": score,
                "comment": comment,
                "user_id": user_id,
                "created_at": created_at.isoformat(),
            }
    return traces


def trace_get(*, project_id: int, trace_id: uuid.UUID) -> dict[str, Any] | None:
    sql = (
        f"SELECT {', '.join(TRACE_COLUMNS)} FROM {TRACES_TABLE} "  # noqa: S608
        "WHERE project_id = {project_id:UInt64} AND trace_id = {trace_id:UUID} LIMIT 1"
    )
    columns, rows = clickhouse.query(sql, {"project_id": project_id, "trace_id": trace_id})
    return _annotate(project_id, [_as_dict(columns, rows[0])])[0] if rows else None
