"""The trace filters shared by the traces page, the API, stats and export: parsed from a query string
(every field validated, errors name the field) and turned into a parameterised WHERE clause."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils.dateparse import parse_datetime

from .ch_sql import ANNOTATIONS_TABLE

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# `range=all`: no time bound, said explicitly where a caller defaults to a recent range (the traces
# page), and kept in links so a shared URL means the same rows. Not for stats, which need a window.
ALL_TIME = "all"
MAX_TEXT = 500  # longest accepted filter string: enough for any model name, tag or phrase
_STATUS = re.compile(r"^(ok|error|[1-5]\d\d)$")


class FilterError(ValueError):
    """A bad filter value: `errors` maps each field to a message (DRF's 400 shape)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass
class TraceFilters:
    since: datetime | None = None
    until: datetime | None = None
    model: str = ""
    provider: str = ""
    alias: str = ""
    status: str = ""  # "ok", "error" or an HTTP status
    api_key_id: int | None = None
    metadata_key: str = ""
    metadata_value: str = ""
    tag: str = ""
    min_cost: float | None = None
    min_latency_ms: float | None = None
    q: str = ""
    period: str = ""  # the named range (`range=24h`) since/until came from, kept in links

    def rollup_ok(self) -> bool:
        """Whether the hourly rollup can answer: only its dimensions are filtered on."""
        raw_only = (self.status, self.metadata_key, self.tag, self.q, self.min_cost, self.min_latency_ms)
        return not any(v not in ("", None) for v in raw_only)

    def query_dict(self) -> dict[str, str]:
        """The filters as query parameters (for links that keep the current view)."""
        out: dict[str, str] = {}
        names = {"period": "range", "api_key_id": "api_key"}
        for name, value in asdict(self).items():
            if value in ("", None) or (name in ("since", "until") and self.period not in ("", "custom")):
                continue
            out[names.get(name, name)] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


def _text(qp: Any, name: str, errors: dict[str, str]) -> str:
    value = str(qp.get(name, "") or "").strip()
    if len(value) > MAX_TEXT:
        errors[name] = f"At most {MAX_TEXT} characters."
        return ""
    return value


def _number(qp: Any, name: str, errors: dict[str, str], kind: type = float) -> Any:
    raw = qp.get(name)
    if raw in (None, ""):
        return None
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        errors[name] = "Must be an integer." if kind is int else "Must be a number."
        return None
    if value < 0 or value != value:  # negative or NaN
        errors[name] = "Must be zero or more."
        return None
    return value


def _when(qp: Any, name: str, errors: dict[str, str]) -> datetime | None:
    raw = qp.get(name)
    if not raw:
        return None
    value = parse_datetime(str(raw))
    if value is None:
        errors[name] = "Use an ISO 8601 date-time, e.g. 2026-11-28T10:00:00Z."
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_filters(qp: Any, *, default_range: str = "", all_time: bool = False) -> TraceFilters:
    """TraceFilters from a QueryDict-like mapping; raises FilterError naming every bad field.
    all_time: whether `range=all` (no time bound) is accepted."""
    errors: dict[str, str] = {}
    f = TraceFilters(
        model=_text(qp, "model", errors),
        provider=_text(qp, "provider", errors),
        alias=_text(qp, "alias", errors),
        status=_text(qp, "status", errors),
        metadata_key=_text(qp, "metadata_key", errors),
        metadata_value=_text(qp, "metadata_value", errors),
        tag=_text(qp, "tag", errors),
        q=_text(qp, "q", errors),
        api_key_id=_number(qp, "api_key", errors, int),
        min_cost=_number(qp, "min_cost", errors),
        min_latency_ms=_number(qp, "min_latency_ms", errors),
    )
    if f.status and not _STATUS.match(f.status):
        errors["status"] = "Use ok, error or an HTTP status code."
    if f.metadata_value and not f.metadata_key:
        errors["metadata_value"] = "Give metadata_key too."
    # `metadata=key=value` is the page's single-box form of the two fields above.
    if qp.get("metadata") and not f.metadata_key:
        key, _, value = _text(qp, "metadata", errors).partition("=")
        f.metadata_key, f.metadata_value = key.strip(), value.strip()
    f.period = _text(qp, "range", errors) or ("" if qp.get("since") or qp.get("until") else default_range)
    if f.period == ALL_TIME and all_time:
        pass  # no since/until: every trace
    elif f.period and f.period != "custom":
        if f.period not in RANGES:
            names = [*RANGES, ALL_TIME] if all_time else list(RANGES)
            errors["range"] = f"Use one of {', '.join(names)} or custom."
        else:
            f.since = datetime.now(UTC) - RANGES[f.period]
    else:
        f.since, f.until = _when(qp, "since", errors), _when(qp, "until", errors)
        if f.since and f.until and f.since >= f.until:
            errors["until"] = "Must be after since."
    if errors:
        raise FilterError(errors)
    return f


def matches(f: TraceFilters, row: dict[str, Any]) -> bool:
    """Whether a live-tail row (traces.live.summary) passes the filters, as `where` would select it.
    Text search looks at the first SEARCH_CHARS of the prompt and the response."""
    when = datetime.fromisoformat(row["timestamp"])
    status = int(row.get("status", 200))
    cost = row.get("cost_total_usd")
    checks = (
        f.since is None or when >= f.since,
        f.until is None or when < f.until,
        not f.provider or row.get("provider") == f.provider,
        not f.alias or row.get("alias") == f.alias,
        not f.model or f.model in (row.get("resolved_model"), row.get("requested_model")),
        f.status != "ok" or status == 200,
        f.status != "error" or status != 200,
        f.status in ("", "ok", "error") or status == int(f.status),
        f.api_key_id is None or row.get("api_key_id") == f.api_key_id,
        not f.metadata_key or f.metadata_key in (row.get("metadata") or {}),
        not f.metadata_value or (row.get("metadata") or {}).get(f.metadata_key) == f.metadata_value,
        not f.tag or f.tag in (row.get("tags") or ()),
        f.min_cost is None or (cost is not None and cost >= f.min_cost),
        f.min_latency_ms is None or float(row.get("latency_ms") or 0) >= f.min_latency_ms,
        not f.q or f.q.lower() in row.get("search_text", ""),
    )
    return all(checks)


def like_pattern(text: str) -> str:
    """A case-insensitive substring as a LIKE pattern on lower-cased text (%, _ and \\ taken literally)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def where(project_id: int, f: TraceFilters) -> tuple[list[str], dict[str, Any]]:
    """WHERE clauses over the traces table and their bound parameters (never formatted into SQL)."""
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
    if f.api_key_id is not None:
        clauses.append("api_key_id = {api_key_id:UInt64}")
        params["api_key_id"] = f.api_key_id
    if f.metadata_key:
        if f.metadata_value:
            clauses.append("metadata[{mk:String}] = {mv:String}")
            params["mv"] = f.metadata_value
        else:
            clauses.append("mapContains(metadata, {mk:String})")
        params["mk"] = f.metadata_key
    if f.tag:
        # A tag is on a trace when it was written with it and not removed since, or added later.
        last = (
            f"SELECT trace_id FROM {ANNOTATIONS_TABLE} WHERE project_id = {{project_id:UInt64}}"  # noqa: S608
            " AND tag = {tag:String} AND kind IN ('tag', 'untag') GROUP BY trace_id"
            " HAVING argMax(kind, created_at) = "
        )
        removed, added = f"trace_id IN ({last}'untag')", f"trace_id IN ({last}'tag')"
        clauses.append(f"((has(tags, {{tag:String}}) AND NOT {removed}) OR {added})")
        params["tag"] = f.tag
    if f.min_cost is not None:
        clauses.append("cost_total_usd >= {min_cost:Float64}")
        params["min_cost"] = f.min_cost
    if f.min_latency_ms is not None:
        clauses.append("latency_ms >= {min_latency_ms:Float32}")
        params["min_latency_ms"] = f.min_latency_ms
    if f.q:
        # The text indexes on lowerUTF8(...) answer a LIKE of one run of letters and digits without
        # reading text, but not a pattern with separators (traces/ch_sql.py, m0008). A text holding the
        # pattern holds each of its runs, so the longest runs, added as conditions the index answers,
        # narrow what is read to check the whole pattern and change no result.
        params["q"] = like_pattern(f.q)
        clauses.append(_text_match("q"))
        for i, run in enumerate(index_runs(f.q)):
            params[f"q{i}"] = f"%{run}%"
            clauses.append(_text_match(f"q{i}"))
    return clauses, params


def _text_match(param: str) -> str:
    like = f"LIKE {{{param}:String}}"
    return f"(lowerUTF8(request_messages) {like} OR lowerUTF8(response_message) {like})"


# A token of ClickHouse's splitByNonAlpha tokenizer: ASCII letters and digits, and any non-ASCII
# character. Runs shorter than ClickHouse's text_index_like_min_pattern_length (4) get no help from
# the index; the two longest are selective enough.
_RUN = re.compile(r"[0-9a-z\u0080-\U0010ffff]{4,}")
MAX_INDEX_RUNS = 2


def index_runs(q: str) -> list[str]:
    """The longest runs of a search text that has separators in it (none when it is one run)."""
    lowered = q.lower()
    runs = _RUN.findall(lowered)
    if runs == [lowered]:
        return []
    return sorted(set(runs), key=lambda r: (-len(r), r))[:MAX_INDEX_RUNS]
