"""Reads and presentation for the traces dashboard pages (views.py): what the templates show,
computed here so the views stay thin and the templates never parse JSON or build shell text.

Everything returned is plain data; the templates escape it (autoescape, never `|safe`)."""

from __future__ import annotations

import json
import pprint
import shlex
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet

from gateway.models import ApiKey
from opentracy_site import clickhouse

from . import stats
from .ch_sql import TRACES_TABLE
from .filters import TraceFilters

PREVIEW_CHARS = 160

# The last user message's text (parts joined), else the start of the raw request (embeddings input).
_PREVIEW_SQL = f"""
SELECT trace_id, leftUTF8(replaceRegexpAll(if(length(users) > 0,
        if(JSONType(last, 'content') = 'Array',
           arrayStringConcat(arrayMap(p -> JSONExtractString(p, 'text'), JSONExtractArrayRaw(last, 'content')), ' '),
           JSONExtractString(last, 'content')),
        request_messages), '\\\\s+', ' '), {PREVIEW_CHARS}) AS preview
FROM (
    SELECT trace_id, request_messages,
        arrayFilter(m -> JSONExtractString(m, 'role') = 'user', JSONExtractArrayRaw(request_messages)) AS users,
        arrayElement(users, -1) AS last
    FROM {TRACES_TABLE}
    WHERE project_id = {{project_id:UInt64}} AND trace_id IN {{ids:Array(UUID)}}
)"""  # noqa: S608 (table name and a constant; values are bound)


# ---------------------------------------------------------------- reads


def has_traces(*, project_id: int) -> bool:
    """Whether the project has any trace at all (the overview's empty state)."""
    sql = f"SELECT 1 FROM {TRACES_TABLE} WHERE project_id = {{project_id:UInt64}} LIMIT 1"  # noqa: S608
    _cols, rows = clickhouse.query(sql, {"project_id": project_id})
    return bool(rows)


def attach_previews(*, project_id: int, traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set `preview` (the prompt, shortened) on rows from trace_list, which leaves the messages out."""
    if not traces:
        return traces
    _cols, rows = clickhouse.query(_PREVIEW_SQL, {"project_id": project_id, "ids": [t["trace_id"] for t in traces]})
    found = {str(trace_id): preview for trace_id, preview in rows}
    for trace in traces:
        trace["preview"] = found.get(trace["trace_id"], "")
    return traces


def api_keys(*, project_id: int) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(project_id=project_id).order_by("name", "pk")


# ---------------------------------------------------------------- overview


def chart_series(series: dict[str, Any]) -> dict[str, Any]:
    """stats.timeseries points as uPlot's column arrays (x in Unix seconds, gaps as null)."""
    points = series["points"]
    return {
        "bucket": series["bucket"],
        "t": [int(datetime.fromisoformat(p["t"]).timestamp()) for p in points],
        "requests": [p["requests"] for p in points],
        "errors": [p["errors"] for p in points],
        "cost": [p["cost_usd"] for p in points],
        "p50": [p["latency_p50_ms"] for p in points],
        "p95": [p["latency_p95_ms"] for p in points],
        "p99": [p["latency_p99_ms"] for p in points],
    }


def overview(*, project_id: int, filters: TraceFilters) -> dict[str, Any]:
    """Totals, per-model rows and chart columns for the window (raises ValueError on a window
    with too many buckets)."""
    models, series = stats.overview(project_id=project_id, filters=filters)  # one query for both
    return {"totals": models["totals"], "models": models["models"], "chart": chart_series(series)}


# ---------------------------------------------------------------- the trace detail page


def pretty(value: Any) -> str:
    """JSON (or a JSON string) indented for reading; other text as it is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, str):
        return {"kind": "text", "text": part}
    if not isinstance(part, dict):
        return {"kind": "json", "text": pretty(part)}
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
        return {"kind": "text", "text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else str(image or "")
        # Only web addresses become links: a `javascript:` or data URL in a trace is shown, not followed.
        linkable = url.startswith(("https://", "http://"))
        label = url if linkable or len(url) <= 80 else f"{url[:60]}… ({len(url):,} characters)"
        return {"kind": "image", "url": url if linkable else "", "label": label}
    return {"kind": "json", "text": pretty(part)}


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict):
        return {"id": "", "name": "", "arguments": pretty(call)}
    fn = call.get("function")
    if not isinstance(fn, dict):
        fn = {}
    return {"id": call.get("id", ""), "name": fn.get("name", ""), "arguments": pretty(fn.get("arguments", ""))}


def message(msg: Any, default_role: str = "user") -> dict[str, Any]:
    """One chat message as role, parts (text, image links, other JSON), tool calls and tool ids."""
    if not isinstance(msg, dict):
        return {"role": default_role, "parts": [_part(msg)], "tool_calls": [], "tool_call_id": "", "name": ""}
    content = msg.get("content")
    if content is None or content == "":
        parts = []
    elif isinstance(content, list):
        parts = [_part(p) for p in content]
    else:
        parts = [_part(content)]
    if msg.get("refusal"):
        parts.append({"kind": "text", "text": f"Refusal: {msg['refusal']}"})
    calls = msg.get("tool_calls")
    if not isinstance(calls, list):
        calls = []
    return {
        "role": str(msg.get("role") or default_role),
        "parts": parts,
        "tool_calls": [_tool_call(c) for c in calls],
        "tool_call_id": str(msg.get("tool_call_id") or ""),
        "name": str(msg.get("name") or ""),
    }


def conversation(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, list):
        return [message(m) for m in messages]
    if messages in (None, "", []):
        return []
    return [message(messages, default_role="input")]


def _attempt(a: Any) -> dict[str, Any]:
    if isinstance(a, dict):
        return {k: a.get(k) for k in ("target", "status", "error_class", "latency_ms")}
    target, status, error_class, latency_ms = a
    return {"target": target, "status": status, "error_class": error_class, "latency_ms": latency_ms}


def replay_request(trace: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The /v1 path and body that repeat the traced request."""
    params = trace.get("request_params")
    if not isinstance(params, dict):
        params = {}
    model = trace.get("requested_model") or trace.get("resolved_model") or ""
    if trace.get("endpoint") == "embeddings":
        return "/embeddings", {"model": model, "input": trace.get("request_messages"), **params}
    body: dict[str, Any] = {"model": model, "messages": trace.get("request_messages") or [], **params}
    if trace.get("metadata"):
        body["metadata"] = trace["metadata"]
    return "/chat/completions", body


def as_curl(trace: dict[str, Any], base_url: str) -> str:
    path, body = replay_request(trace)
    data = json.dumps(body, indent=2, ensure_ascii=False)
    return (
        f"curl {shlex.quote(base_url + path)} \\\n"
        '  -H "Authorization: Bearer $OPENTRACY_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(data)}"
    )


def as_python(trace: dict[str, Any], base_url: str) -> str:
    path, body = replay_request(trace)
    call = "client.embeddings.create" if path == "/embeddings" else "client.chat.completions.create"
    request = pprint.pformat(body, indent=1, width=100, sort_dicts=False)
    lines = [
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{base_url}", api_key="<your key>")',
        f"request = {request}",
        f"response = {call}(**request)",
        "print(response)",
    ]
    return "\n".join(lines) + "\n"


def trace_page(trace: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Everything the detail page shows, from trace_get's dict."""
    response = trace.get("response_message")
    params = trace.get("request_params")
    attempts = [_attempt(a) for a in trace.get("attempts") or []]
    return {
        "trace": trace,
        "when": datetime.fromisoformat(trace["timestamp"]).astimezone(UTC),
        "conversation": conversation(trace.get("request_messages")),
        "response": message(response, default_role="assistant") if response not in (None, "") else None,
        "params": pretty(params) if params not in (None, "", {}) else "",
        "attempts": attempts,
        "metadata": sorted((trace.get("metadata") or {}).items()),
        "curl": as_curl(trace, base_url),
        "python": as_python(trace, base_url),
    }
