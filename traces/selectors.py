"""Reads of traces from ClickHouse, always scoped to one project."""

from __future__ import annotations

import base64
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from opentracy_site import clickhouse

from .ch_sql import TRACE_COLUMNS, TRACE_LIST_COLUMNS, TRACES_TABLE

JSON_COLUMNS = ("request_messages", "request_params", "response_message")


@dataclass
class TraceFilters:
    since: datetime | None = None
    until: datetime | None = None
    model: str = ""
    provider: str = ""
    status: str = ""  # "ok", "error" or an HTTP status
    alias: str = ""
    metadata_key: str = ""
    metadata_value: str = ""
    q: str = ""


def encode_cursor(timestamp: datetime, trace_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{timestamp.isoformat()}|{trace_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Raises ValueError on a cursor this API did not produce."""
    try:
        ts, _, tid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(ts), uuid.UUID(tid)
    except Exception as exc:
        raise ValueError("invalid cursor") from exc


def _where(project_id: int, f: TraceFilters) -> tuple[list[str], dict[str, Any]]:
    clauses = ["project_id = {project_id:UInt64}"]
    params: dict[str, Any] = {"project_id": project_id}
    if f.since:
        clauses.append("timestamp >= {since:DateTime64(3, 'UTC')}")
        params["since"] = f.since
    if f.until:
        clauses.append("timestamp < {until:DateTime64(3, 'UTC')}")
        params["until"] = f.until
    for column in ("provider", "alias"):
        if getattr(f, column):
            clauses.append(f"{column} = {{{column}:String}}")
            params[column] = getattr(f, column)
    if f.model:
        clauses.append("(resolved_model = {model:String} OR requested_model = {model:String})")
        params["model"] = f.model
    if f.status == "ok":
        clauses.append("status = 200")
    elif f.status == "error":
        clauses.append("status != 200")
    elif f.status:
        clauses.append("status = {status:UInt16}")
        params["status"] = int(f.status)
    if f.metadata_key:
        if f.metadata_value:
            clauses.append("metadata[{mk:String}] = {mv:String}")
            params["mv"] = f.metadata_value
        else:
            clauses.append("mapContains(metadata, {mk:String})")
        params["mk"] = f.metadata_key
    if f.q:
        clauses.append(
            "(positionCaseInsensitiveUTF8(request_messages, {q:String}) > 0"
            " OR positionCaseInsensitiveUTF8(response_message, {q:String}) > 0)"
        )
        params["q"] = f.q
    return clauses, params


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
    clauses, params = _where(project_id, filters)
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
    return [_as_dict(columns, r) for r in rows], next_cursor


def trace_get(*, project_id: int, trace_id: uuid.UUID) -> dict[str, Any] | None:
    sql = (
        f"SELECT {', '.join(TRACE_COLUMNS)} FROM {TRACES_TABLE} "  # noqa: S608
        "WHERE project_id = {project_id:UInt64} AND trace_id = {trace_id:UUID} LIMIT 1"
    )
    columns, rows = clickhouse.query(sql, {"project_id": project_id, "trace_id": trace_id})
    return _as_dict(columns, rows[0]) if rows else None
