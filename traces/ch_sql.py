"""ClickHouse DDL and queries for traces. Parameters are always bound by the driver."""

from __future__ import annotations

TRACES_TABLE = "traces"

# Columns written by the trace writer, in insert order, with the default used when a record
# lacks the field. Costs default to NULL: an unknown price is recorded as unknown, never as 0.
TRACE_COLUMNS: dict[str, object] = {
    "trace_id": None,
    "project_id": 0,
    "timestamp": None,
    "api_key_id": 0,
    "endpoint": "chat",
    "requested_model": "",
    "alias": "",
    "resolved_model": "",
    "provider": "",
    "request_messages": "[]",
    "request_params": "{}",
    "response_message": "",
    "finish_reason": "",
    "stream": False,
    "status": 200,
    "error_class": "",
    "error_message": "",
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cached_tokens": 0,
    "cost_input_usd": None,
    "cost_output_usd": None,
    "cost_total_usd": None,
    "latency_ms": 0.0,
    "ttft_ms": None,
    "overhead_ms": 0.0,
    # (target, status, error_class, latency_ms) per upstream call; see ch_migrations/m0002.
    "attempts": [],
    "retries": 0,
    "fallbacks": 0,
    "user": "",
    "metadata": {},
    "tags": [],
}

# Shown by the list endpoint; the large text columns stay out of it.
TRACE_LIST_COLUMNS = [c for c in TRACE_COLUMNS if c not in ("request_messages", "request_params", "response_message")]
