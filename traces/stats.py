"""Aggregates over a project's traces for the overview and `/api/stats/*`: from the hourly rollup
(and the daily one for whole days) when the filters allow it (it never scans raw traces), else from
the traces table with the same SQL shape and the same latency/TTFT histograms (traces/histogram.py),
so both answer in one format and agree on the quantiles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentracy_site import clickhouse

from . import histogram
from .ch_sql import DAILY_TABLE, QUANTILES, ROLLUP_MERGE, ROLLUP_TABLE, TRACES_TABLE
from .filters import TraceFilters, where

BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_POINTS = 2000  # a chart has no use for more; also bounds the work a bad request can ask for
_SUMS = ("requests", "errors", "unpriced", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd")

# ch_sql.ROLLUP_MERGE's measures computed from raw traces. The model a row counts under is the one
# that answered (else the one asked for), as in the rollup. Latency and TTFT come back as bucket counts with their
# min and max; quantiles are read from them in Python (_clean), the same way for both sources.
_RAW_MEASURES = f"""count() AS requests, countIf(status != 200) AS errors,
    sum(ifNull(cost_total_usd, 0)) AS cost_usd, countIf(status = 200 AND cost_total_usd IS NULL) AS unpriced,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
    sum(cached_tokens) AS cached_tokens,
    {histogram.hist_sql("latency_ms")} AS latency_hist, min(latency_ms) AS latency_min, max(latency_ms) AS latency_max,
    {histogram.hist_sql("assumeNotNull(ttft_ms)", "ttft_ms IS NOT NULL")} AS ttft_hist,
    min(ttft_ms) AS ttft_min, max(ttft_ms) AS ttft_max"""
# The rollups' columns read side by side when a window takes whole days from the daily one.
_ROLLUP_COLUMNS = """model, provider, requests, errors, cost_usd, unpriced, prompt_tokens, completion_tokens,
    cached_tokens, latency_hist, latency_min, latency_max, ttft_hist, ttft_min, ttft_max"""
_RAW_MODEL = "if(resolved_model != '', resolved_model, requested_model)"
_MODEL_ORDER = "requests DESC, model_name, provider"  # most requested first; ties in a stable order


def pick_bucket(since: datetime, until: datetime) -> str:
    span = until - since
    return "minute" if span <= timedelta(hours=3) else "hour" if span <= timedelta(days=4) else "day"


def _window(f: TraceFilters) -> tuple[datetime, datetime]:
    until = f.until or datetime.now(UTC)
    return f.since or until - timedelta(days=1), until


@dataclass(frozen=True)
class _Source:
    sql: str  # what follows FROM, its WHERE included
    column: str  # the time column
    params: dict[str, Any]
    name: str  # the table that answers (`source` in the answers)
    rollup: bool


def _source(project_id: int, f: TraceFilters, bucket: str, days: bool = False) -> _Source:
    """Where the measures come from: the hourly rollup when the filters allow it, with the daily
    rollup for the whole days inside the window when `days` (no grouping finer than a day), else
    the traces table."""
    since, until = _window(f)
    if not (f.rollup_ok() and bucket != "minute"):
        clauses, raw_params = where(project_id, TraceFilters(**{**vars(f), "since": since, "until": until}))
        return _Source(f"{TRACES_TABLE} WHERE {' AND '.join(clauses)}", "timestamp", raw_params, TRACES_TABLE, False)
    dims = ["project_id = {project_id:UInt64}"]
    params: dict[str, Any] = {"project_id": project_id, "since": since, "until": until}
    for name in ("model", "provider", "alias"):
        if getattr(f, name):
            dims.append(f"{name} = {{{name}:String}}")
            params[name] = getattr(f, name)
    if f.api_key_id is not None:
        dims.append("api_key_id = {api_key_id:UInt64}")
        params["api_key_id"] = f.api_key_id
    # The rollup holds whole hours: the window widens to the hours it touches.
    hours = [*dims, "hour >= toStartOfHour({since:DateTime64(3, 'UTC')})", "hour < {until:DateTime64(3, 'UTC')}"]
    first_hour = _floor(since, "hour")
    first_day = _floor(first_hour, "day")
    if first_day < first_hour:  # the window starts within a day: its whole days start at the next
        first_day += BUCKETS["day"]
    last_day = _floor(until, "day")
    if not days or first_day >= last_day:
        return _Source(f"{ROLLUP_TABLE} WHERE {' AND '.join(hours)}", "hour", params, ROLLUP_TABLE, True)
    params.update(first_day=first_day, last_day=last_day)
    edges = [*hours, "(hour < {first_day:DateTime('UTC')} OR hour >= {last_day:DateTime('UTC')})"]
    middle = [*dims, "day >= {first_day:DateTime('UTC')}", "day < {last_day:DateTime('UTC')}"]
    sql = (
        f"(SELECT hour AS period, {_ROLLUP_COLUMNS} FROM {ROLLUP_TABLE} WHERE {' AND '.join(edges)} "  # noqa: S608
        f"UNION ALL SELECT day AS period, {_ROLLUP_COLUMNS} FROM {DAILY_TABLE} WHERE {' AND '.join(middle)})"
    )
    return _Source(sql, "period", params, DAILY_TABLE, True)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Histograms as p50/p95/p99 (None when there is no value), plus the error rate."""
    for name in ("latency", "ttft"):
        hist, lo, hi = row.pop(f"{name}_hist"), row.pop(f"{name}_min"), row.pop(f"{name}_max")
        for q, v in zip(QUANTILES, histogram.quantiles(hist, lo, hi, QUANTILES), strict=True):
            row[f"{name}_p{round(q * 100)}_ms"] = None if v is None else round(v, 2)
    row["error_rate"] = round(row["errors"] / row["requests"], 4) if row["requests"] else 0.0
    row["cost_usd"] = round(row["cost_usd"], 6)
    return row


def _combine(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Rows of measures added up (sums, merged histograms, min of mins, max of maxes): the totals
    of by_model come from its per-model rows, not from a second query."""
    rows = list(rows)
    out: dict[str, Any] = {name: sum((r[name] for r in rows), 0.0 if name == "cost_usd" else 0) for name in _SUMS}
    for name in ("latency", "ttft"):
        out[f"{name}_hist"] = histogram.merge(r[f"{name}_hist"] for r in rows)
        lows = [r[f"{name}_min"] for r in rows if r[f"{name}_min"] is not None]
        highs = [r[f"{name}_max"] for r in rows if r[f"{name}_max"] is not None]
        out[f"{name}_min"], out[f"{name}_max"] = min(lows, default=None), max(highs, default=None)
    return out


def _empty() -> dict[str, Any]:
    return _clean(_combine([]))


def _span(filters: TraceFilters, bucket: str) -> tuple[str, datetime, datetime]:
    """(bucket, since, until) of a time series; ValueError when it would have too many points."""
    since, until = _window(filters)
    bucket = bucket or pick_bucket(since, until)
    if (until - since) / BUCKETS[bucket] > MAX_POINTS:
        raise ValueError(f"{bucket} buckets over this range give more than {MAX_POINTS} points; use a larger bucket.")
    return bucket, since, until


def _series(
    found: dict[datetime, dict[str, Any]], bucket: str, since: datetime, until: datetime, table: str
) -> dict[str, Any]:
    """Points from rows of measures by bucket start, empty buckets included (charts need the gaps)."""
    start = _floor(since, bucket)
    points = []
    t = start
    while t < until:
        row = found.get(t)
        points.append({"t": t.isoformat(), **(_clean(row) if row else _empty())})
        t += BUCKETS[bucket]
    return {"bucket": bucket, "since": start.isoformat(), "until": until.isoformat(), "source": table, "points": points}


def _models(found: list[dict[str, Any]], filters: TraceFilters, table: str) -> dict[str, Any]:
    """Per-model rows (measures, in order) and their totals, added up from the same rows."""
    totals = _clean(_combine(found))
    models = [{"model": r.pop("model_name"), "provider": r.pop("provider"), **_clean(r)} for r in found]
    since, until = _window(filters)
    return {"since": since.isoformat(), "until": until.isoformat(), "source": table, "models": models, "totals": totals}


def _time_sql(column: str, bucket: str) -> str:
    return f"toStartOfInterval({column}, INTERVAL 1 {bucket.upper()}, 'UTC')"


def timeseries(*, project_id: int, filters: TraceFilters, bucket: str = "") -> dict[str, Any]:
    """Points per bucket over the window, empty buckets included (charts need the gaps)."""
    bucket, since, until = _span(filters, bucket)
    src = _source(project_id, filters, bucket, days=bucket == "day")
    measures = ROLLUP_MERGE if src.rollup else _RAW_MEASURES
    sql = f"SELECT {_time_sql(src.column, bucket)} AS t, {measures} FROM {src.sql} GROUP BY t ORDER BY t"  # noqa: S608
    cols, rows = clickhouse.query(sql, src.params)
    found = {r[0].replace(tzinfo=UTC): dict(zip(cols[1:], r[1:], strict=True)) for r in rows}
    return _series(found, bucket, since, until, src.name)


def _floor(when: datetime, bucket: str) -> datetime:
    when = when.astimezone(UTC)
    if bucket == "minute":
        return when.replace(second=0, microsecond=0)
    if bucket == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def by_model(*, project_id: int, filters: TraceFilters) -> dict[str, Any]:
    """One row per model (and provider) over the window, most requested first, plus the totals
    (added up from the same rows: one query)."""
    src = _source(project_id, filters, "hour", days=True)
    model = "model" if src.rollup else _RAW_MODEL
    measures = ROLLUP_MERGE if src.rollup else _RAW_MEASURES
    sql = (
        f"SELECT {model} AS model_name, provider, {measures} FROM {src.sql} "  # noqa: S608
        f"GROUP BY model_name, provider ORDER BY {_MODEL_ORDER}"
    )
    cols, rows = clickhouse.query(sql, src.params)
    return _models([dict(zip(cols, r, strict=True)) for r in rows], filters, src.name)


def overview(*, project_id: int, filters: TraceFilters, bucket: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """by_model and timeseries of the same window, as they answer, from one query (the overview
    page): the rows are merged once per (model, provider, bucket), then both groupings are taken
    from those few rows, so the histograms of a month of rollup rows are summed once, not twice."""
    bucket, since, until = _span(filters, bucket)
    src = _source(project_id, filters, bucket, days=bucket == "day")
    if not src.rollup and filters.rollup_ok():  # minute points: raw rows, while by_model reads the rollup
        return by_model(project_id=project_id, filters=filters), timeseries(
            project_id=project_id, filters=filters, bucket=bucket
        )
    model = "model" if src.rollup else _RAW_MODEL
    measures = ROLLUP_MERGE if src.rollup else _RAW_MEASURES
    # The inner rows have the rollup's column names, so the outer query re-adds them as the rollup's.
    sql = (
        f"SELECT grouping(model_name, provider) = 0 AS per_model, model_name, provider, t, {ROLLUP_MERGE} "  # noqa: S608
        f"FROM (SELECT {model} AS model_name, provider, {_time_sql(src.column, bucket)} AS t, {measures} "
        f"FROM {src.sql} GROUP BY model_name, provider, t) "
        f"GROUP BY GROUPING SETS ((model_name, provider), (t)) ORDER BY per_model, t, {_MODEL_ORDER}"
    )
    cols, rows = clickhouse.query(sql, src.params)
    per_model: list[dict[str, Any]] = []
    points: dict[datetime, dict[str, Any]] = {}
    for r in rows:
        row = dict(zip(cols, r, strict=True))
        if row.pop("per_model"):
            del row["t"]
            per_model.append(row)
        else:
            t = row.pop("t")
            del row["model_name"], row["provider"]
            points[t.replace(tzinfo=UTC)] = row
    return _models(per_model, filters, src.name), _series(points, bucket, since, until, src.name)
