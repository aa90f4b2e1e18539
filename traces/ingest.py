"""Parsing and validation for POST /api/traces/ingest: OpenAI-format request/response pairs logged
elsewhere, as JSON (one item, a list, or {"traces": [...]}) or JSON Lines, turned into trace
records in the gateway's format (gateway/chat.py). No I/O here; traces/services.py writes them.

Every item is checked before anything is written: one bad item rejects the whole request (400,
naming each bad item and field), so a request is either recorded in full or not at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from rest_framework.exceptions import APIException, ValidationError

from gateway.errors import GatewayError
from gateway.resolve import parse_target
from gateway.validation import validate_chat

Record = dict[str, Any]

# One request's body. The body and its parsed records are held in memory while a request is
# checked, so this bounds a request to a few tens of MB of RAM; bigger logs go in several requests.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Items per request: the writer's queue (OPENTRACY_TRACE_QUEUE_SIZE, 50,000 by default) takes a
# whole request at once without spilling to disk, and a 400 stays quick to produce and to read.
MAX_ITEMS = 10_000
# Bad items named in one 400 (the first ones): enough to fix a pattern, small enough to read.
MAX_REPORTED_ERRORS = 50
MAX_CLOCK_SKEW_S = 86_400  # how far ahead of our clock a timestamp may be (another machine's clock)

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
FIELDS = ("request", "response", "timestamp", "latency_ms", "metadata", "tags", "user", "provider", "status")
# Request keys kept in their own columns rather than in request_params (as the gateway does).
OWN_COLUMNS = ("messages", "model", "metadata", "user")
SOURCE = {"source": "ingest"}
JSON_HINT = 'Send one trace, a list of traces or {"traces": [...]}; for JSON Lines, Content-Type: application/x-ndjson.'


class PayloadTooLarge(APIException):
    status_code = 413
    default_detail = f"The body is over {MAX_BODY_BYTES:,} bytes (10 MiB); send the traces in several requests."
    default_code = "payload_too_large"


class Invalid(Exception):
    """One item's first problem, as args (field as a dotted path, what is wrong with it)."""


def parse_body(raw: bytes, content_type: str, *, retention_days: int) -> list[Record]:
    """Trace records in the order sent (the service adds ids and project); raises 400 or 413.
    Traces older than `retention_days` are refused: ClickHouse's TTL would delete them on arrival."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some editors save files
    if not raw.strip():
        raise ValidationError({"body": "The body is empty; send one trace, a list, or JSON Lines."})
    jsonl = content_type.split(";")[0].strip().lower() in JSONL_TYPES
    group, items = ("lines", _jsonl_items(raw)) if jsonl else ("traces", _json_items(raw))
    if len(items) > MAX_ITEMS:
        raise PayloadTooLarge(f"At most {MAX_ITEMS} traces per request (got {len(items)}); send several requests.")
    oldest, records = time.time() - retention_days * 86_400, []
    errors: dict[str, dict[str, str]] = {}
    for key, item in items:
        try:
            records.append(item_record(item, oldest))
        except Invalid as exc:
            if len(errors) < MAX_REPORTED_ERRORS:
                errors[key] = {exc.args[0]: exc.args[1]}
    if errors:
        raise ValidationError({group: errors})
    return records


def _json_items(raw: bytes) -> list[tuple[str, Any]]:
    """(index, item) pairs from one JSON document."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError({"body": f"Not valid JSON ({exc}). {JSON_HINT}"})
    if isinstance(doc, dict) and "traces" in doc:
        doc = doc["traces"]
        if not isinstance(doc, list):
            raise ValidationError({"traces": "Must be a list of traces."})
    items = doc if isinstance(doc, list) else [doc]
    return [(str(i), item) for i, item in enumerate(items)]


def _jsonl_items(raw: bytes) -> list[tuple[str, Any]]:
    """(line number from 1, item) pairs; blank lines are skipped, CRLF endings accepted."""
    items: list[tuple[str, Any]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                items.append((str(number), orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                items.append((str(number), NotJson(exc)))  # reported with the other bad items
    return items


class NotJson(str):
    """A JSON Lines line that does not parse, as the parser's message."""


def item_record(item: Any, oldest: float = 0.0) -> Record:
    """One item as a trace record in the gateway's format; raises Invalid."""
    if isinstance(item, NotJson):
        raise Invalid("non_field_errors", f"Not valid JSON ({item}).")
    if not isinstance(item, dict):
        raise Invalid("non_field_errors", 'Each trace must be an object: {"request": {...}, "response": {...}}.')
    for name in item:
        if name not in FIELDS:
            raise Invalid(name, f"Unknown field; a trace has {', '.join(FIELDS)}.")
    request, response = item.get("request"), item.get("response")
    if not isinstance(request, dict):
        raise Invalid("request", "Required: the OpenAI chat completion request (an object with messages).")
    if not isinstance(response, dict):
        raise Invalid("response", "Required: the OpenAI chat.completion object, or an OpenAI error body.")
    req_model = _opt(request.get("model"), "str", "request.model", "")
    resp_model = _opt(response.get("model"), "str", "response.model", "")
    if not (req_model or resp_model):
        raise Invalid("request.model", "Give the model in the request or in the response.")
    try:
        validate_chat({**request, "model": req_model or resp_model})  # the gateway's own checks
    except GatewayError as exc:
        raise Invalid(f"request.{exc.param}" if exc.param else "request", exc.message)
    provider, resolved = _route(req_model, resp_model, _opt(item.get("provider"), "str", "provider", ""))
    user = request.get("user") if isinstance(request.get("user"), str) else ""
    metadata = _opt(item.get("metadata"), "map", "metadata", {})
    rec: Record = {
        "timestamp": _timestamp(item, response, oldest),
        "endpoint": "ingest",  # not gateway spend: budgets and /metrics leave these out
        "requested_model": req_model or resp_model,
        "resolved_model": resolved,
        "provider": provider,
        "request_messages": orjson.dumps(request["messages"]).decode(),
        "request_params": orjson.dumps({k: v for k, v in request.items() if k not in OWN_COLUMNS}).decode(),
        "stream": request.get("stream") is True,
        "latency_ms": float(_opt(item.get("latency_ms"), "amount", "latency_ms", 0.0)),
        "user": _opt(item.get("user"), "str", "user", "") or user,
        # The request's metadata, then the item's, then the mark that it was ingested (always wins).
        "metadata": {**(request.get("metadata") or {}), **metadata, **SOURCE},
        "tags": _opt(item.get("tags"), "list", "tags", []),
    }
    rec.update(_error(item, response) if "error" in response else _answer(item, response))
    return rec


def _route(req_model: str, resp_model: str, given: str) -> tuple[str, str]:
    """(provider, resolved model as the gateway writes it: "provider/model"). The provider comes from
    a "provider/model" name, else the item's provider, else a bare name's prefix (gpt-4o → openai)."""

    def split(name: str) -> tuple[str, str]:
        target = parse_target(name) if "/" in name else None
        return (target.provider, target.model) if target else ("", name)

    (resp_provider, resp_bare), (req_provider, req_bare) = split(resp_model), split(req_model)
    model = resp_bare or req_bare  # the response names the exact version that answered
    provider = resp_provider or req_provider or given
    if not provider and "/" not in model:
        guess = parse_target(model)
        provider = guess.provider if guess else ""
    return provider, f"{provider}/{model}" if provider else model


def _answer(item: Record, response: Record) -> Record:
    if item.get("status", response.get("status", 200)) != 200:
        raise Invalid("status", "A chat.completion response is a success (200); send a failure as an error body.")
    if response.get("object", "chat.completion") != "chat.completion":
        raise Invalid("response.object", "Must be chat.completion (streamed chunks are not accepted; join them).")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Invalid("response.choices", "Must be a non-empty list of choices.")
    if not isinstance(choices[0].get("message"), dict):
        raise Invalid("response.choices[0].message", "Must be the assistant's message object.")
    finish = _opt(choices[0].get("finish_reason"), "str", "response.choices[0].finish_reason", "")
    usage = _opt(response.get("usage"), "obj", "response.usage", {})
    details = _opt(usage.get("prompt_tokens_details"), "obj", "response.usage.prompt_tokens_details", {})
    return {
        "response_message": orjson.dumps(choices[0]["message"]).decode(),
        "finish_reason": finish,
        "prompt_tokens": _opt(usage.get("prompt_tokens"), "count", "response.usage.prompt_tokens", 0),
        "completion_tokens": _opt(usage.get("completion_tokens"), "count", "response.usage.completion_tokens", 0),
        "cached_tokens": _opt(
            details.get("cached_tokens"), "count", "response.usage.prompt_tokens_details.cached_tokens", 0
        ),
    }


def _error(item: Record, response: Record) -> Record:
    error = response["error"]
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        raise Invalid("response.error", 'Must be an OpenAI error object: {"message": ..., "type": ..., "code": ...}.')
    status = item.get("status", response.get("status"))
    if type(status) is not int or not 400 <= status <= 599:
        raise Invalid("status", "An error response needs its HTTP status, an integer from 400 to 599.")
    kind = next((v for v in (error.get("code"), error.get("type")) if isinstance(v, str) and v), "")
    return {"status": status, "error_class": kind, "error_message": error["message"]}


def _timestamp(item: Record, response: Record, oldest: float) -> float:
    """Epoch seconds: the item's timestamp, else the response's `created`, else now."""
    field, value = (
        ("timestamp", item["timestamp"]) if "timestamp" in item else ("response.created", response.get("created"))
    )
    if value is None:
        return time.time()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)  # Python 3.11 reads ISO 8601, "Z" included
        except ValueError:
            raise Invalid(field, "Use an ISO 8601 date-time (2026-11-28T10:00:00Z) or epoch seconds.")
        value = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not _is_amount(value) or value > time.time() + MAX_CLOCK_SKEW_S:
        raise Invalid(field, "Must be a time from 1970 to now, in epoch seconds (not milliseconds) or ISO 8601.")
    if value < oldest:
        raise Invalid(field, "Is older than the project's trace retention: it would be deleted on arrival.")
    return float(value)


def _opt(value: Any, kind: str, field: str, default: Any) -> Any:
    """An optional field: `default` when absent or null, else the value if it is of `kind`."""
    ok, message = KINDS[kind]
    if value is None:
        return default
    if not ok(value):
        raise Invalid(field, message)
    return value


def _is_amount(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# What an optional field may be (besides absent or null), and what to say when it is not.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "Must be a string."),
    "obj": (lambda v: isinstance(v, dict), "Must be an object."),
    "map": (lambda v: isinstance(v, dict) and all(type(x) is str for x in v.values()), "Must map strings to strings."),
    "list": (lambda v: isinstance(v, list) and all(type(x) is str for x in v), "Must be a list of strings."),
    "count": (lambda v: type(v) is int and v >= 0, "Must be an integer ≥ 0."),  # type(): a bool is no count
    "amount": (_is_amount, "Must be a number ≥ 0."),
}
