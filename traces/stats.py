"""Aggregates over a project's traces for the overview and `/api/stats/*`: from the hourly rollup
when the filters allow it (it never scans raw traces), else from the traces table with the same SQL
shape, so both answer in one format."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from opentracy_site import clickhouse

from .ch_sql import QUANTILES, ROLLUP_TABLE, TRACES_TABLE
from .filters import TraceFilters, where

BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_POINTS = 2000  # a chart has no use for more; also bounds the work a bad request can ask for
_Q = ", ".join(str(q) for q in QUANTILES)

# The same measures over the two sources. The model a row counts under is the one that answered
# (else the one asked for), as in the rollup.
_ROLLUP_MEASURES = f"""sum(requests) AS requests, sum(errors) AS errors, sum(cost_usd) AS cost_usd,
    sum(unpriced) AS unpriced, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
    quantilesTDigestMerge({_Q})(latency) AS latency, quantilesTDigestIfMerge({_Q})(ttft) AS ttft"""
_RAW_MEASURES = f"""count() AS requests, countIf(status != 200) AS errors,
    sum(ifNull(cost_total_usd, 0)) AS cost_usd, countIf(status = 200 AND cost_total_usd IS NULL) AS unpriced,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
    sum(cached_tokens) AS cached_tokens, quantilesTDigest({_Q})(latency_ms) AS latency,
    quantilesTDigestIf({_Q})(ifNull(ttft_ms, 0), ttft_ms IS NOT NULL) AS ttft"""
_RAW_MODEL = "if(resolved_model != '', resolved_model, requested_model)"


def pick_bucket(since: datetime, until: datetime) -> str:
    span = until - since
    return "minute" if span <= timedelta(hours=3) else "hour" if span <= timedelta(days=4) else "day"


def _window(f: TraceFilters) -> tuple[datetime, datetime]:
    until = f.until or datetime.now(UTC)
    return f.since or until - timedelta(days=1), until


def _source(project_id: int, f: TraceFilters, bucket: str) -> tuple[str, str, str, dict[str, Any], bool]:
    """(table, time column, WHERE sql, params, from_rollup)."""
    since, until = _window(f)
    if f.rollup_ok() and bucket != "minute":
        # The rollup holds whole hours: the window widens to the hours it touches.
        clauses = ["project_id = {project_id:UInt64}", "hour >= toStartOfHour({since:DateTime64(3, 'UTC')})"]
        clauses.append("hour < {until:DateTime64(3, 'UTC')}")
        params: dict[str, Any] = {"project_id": project_id, "since": since, "until": until}
        for name in ("model", "provider", "alias"):
            if getattr(f, name):
                clauses.append(f"{name} = {{{name}:String}}")
                params[name] = getattr(f, name)
        if f.api_key_id is not None:
            clauses.append("api_key_id = {api_key_id:UInt64}")
            params["api_key_id"] = f.api_key_id
        return ROLLUP_TABLE, "hour", " AND ".join(clauses), params, True
    clauses, params = where(project_id, TraceFilters(**{**vars(f), "since": since, "until": until}))
    return TRACES_TABLE, "timestamp", " AND ".join(clauses), params, False


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Quantile arrays as p50/p95/p99 (None when no value: t-digest answers NaN on no input)."""
    for name in ("latency", "ttft"):
        values = row.pop(name) or [math.nan] * len(QUANTILES)
        for q, v in zip(QUANTILES, values, strict=True):
            row[f"{name}_p{round(q * 100)}_ms"] = None if math.isnan(v) or (name == "ttft" and not v) else round(v, 2)
    row["error_rate"] = round(row["errors"] / row["requests"], 4) if row["requests"] else 0.0
    row["cost_usd"] = round(row["cost_usd"], 6)
    return row


def _empty() -> dict[str, Any]:
    zero: dict[str, Any] = dict.fromkeys(
        ("requests", "errors", "unpriced", "prompt_tokens", "completion_tokens", "cached_tokens"), 0
    )
    return _clean({**zero, "cost_usd": 0.0, "latency": None, "ttft": None})


def timeseries(*, project_id: int, filters: TraceFilters, bucket: str = "") -> dict[str, Any]:
    """Points per bucket over the window, empty buckets included (charts need the gaps)."""
    since, until = _window(filters)
    bucket = bucket or pick_bucket(since, until)
    step = BUCKETS[bucket]
    if (until - since) / step > MAX_POINTS:
        raise ValueError(f"{bucket} buckets over this range give more than {MAX_POINTS} points; use a larger bucket.")
    table, column, sql_where, params, rollup = _source(project_id, filters, bucket)
    measures = _ROLLUP_MEASURES if rollup else _RAW_MEASURES
    sql = (
        f"SELECT toStartOfInterval({column}, INTERVAL 1 {bucket.upper()}, 'UTC') AS t, {measures} "  # noqa: S608
        f"FROM {table} WHERE {sql_where} GROUP BY t ORDER BY t"
    )
    cols, rows = clickhouse.query(sql, params)
    found = {r[0].replace(tzinfo=UTC): _clean(dict(zip(cols[1:], r[1:], strict=True))) for r in rows}
    start = _floor(since, bucket)
    points = []
    t = start
    while t < until:
        points.append({"t": t.isoformat(), **found.get(t, _empty())})
        t += step
    return {"bucket": bucket, "since": start.isoformat(), "until": until.isoformat(), "source": table, "points": points}


def _floor(when: datetime, bucket: str) -> datetime:
    when = when.astimezone(UTC)
    if bucket == "minute":
        return when.replace(second=0, microsecond=0)
    if bucket == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def by_model(*, project_id: int, filters: TraceFilters) -> dict[str, Any]:
    """One row per model (and provider) over the window, most requested first, plus the totals."""
    table, _column, sql_where, params, rollup = _source(project_id, filters, "hour")
    model = "model" if rollup else _RAW_MODEL
    measures = _ROLLUP_MEASURES if rollup else _RAW_MEASURES
    sql = (
        f"SELECT {model} AS model_name, provider, {measures} FROM {table} WHERE {sql_where} "  # noqa: S608
        "GROUP BY model_name, provider ORDER BY requests DESC, model_name"
    )
    cols, rows = clickhouse.query(sql, params)
    models = [{"model": r[0], "provider": r[1], **_clean(dict(zip(cols[2:], r[2:], strict=True)))} for r in rows]
    totals_sql = f"SELECT {measures} FROM {table} WHERE {sql_where}"  # noqa: S608
    tcols, trows = clickhouse.query(totals_sql, params)
    totals = _clean(dict(zip(tcols, trows[0], strict=True))) if trows else _empty()
    since, until = _window(filters)
    return {"since": since.isoformat(), "until": until.isoformat(), "source": table, "models": models, "totals": totals}
