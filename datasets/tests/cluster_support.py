"""Real traffic for the clustering tests: Banking77 test prompts (four intents, 25 each) written as
traces through the trace writer, and a helper that finishes a run whoever runs it."""

from __future__ import annotations

import csv
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from datasets.models import ClusteringRun
from datasets.runs import run_execute
from traces.writer import get_writer

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "banking77" / "test.csv"
INTENTS = ("exchange_rate", "pin_blocked", "top_up_failed", "card_arrival")
PER_INTENT = 25
SYSTEM = "You are the support assistant of a mobile bank. Answer briefly."


def banking(intents: tuple[str, ...] = INTENTS, per_intent: int = PER_INTENT, skip: int = 0) -> list[tuple[str, str]]:
    """(intent, prompt) pairs: the first `per_intent` test prompts of each intent after `skip`."""
    seen: dict[str, int] = {}
    out = []
    with DATA.open() as f:
        for row in csv.DictReader(f):
            intent = row["category"]
            if intent in intents:
                seen[intent] = seen.get(intent, 0) + 1
                if skip < seen[intent] <= skip + per_intent:
                    out.append((intent, row["text"]))
    return out


def messages(prompt: str, system: str | None = SYSTEM) -> str:
    body = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": [{"type": "text", "text": prompt}]}
    ]
    return orjson.dumps(body).decode()


def record(project_id: int, prompt_messages: str, minutes_ago: float = 5.0, **fields: Any) -> dict[str, Any]:
    """A trace as the gateway writes one (the shape of traces/tests/test_stats.py)."""
    model = fields.pop("model", "openai/gpt-4o-mini")
    return {
        "trace_id": str(uuid.uuid4()),
        "project_id": project_id,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).timestamp(),
        "api_key_id": 7,
        "requested_model": model,
        "resolved_model": model,
        "provider": model.split("/")[0],
        "request_messages": prompt_messages,
        "response_message": '{"role": "assistant", "content": "Sure."}',
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "latency_ms": 300.0,
        "cost_total_usd": 0.001,
        **fields,
    }


def write(records: list[dict[str, Any]]) -> list[str]:
    writer = get_writer()
    for r in records:
        writer.submit(r)
    writer.flush()
    return [r["trace_id"] for r in records]


def write_banking(project_id: int, pairs: list[tuple[str, str]], minutes_ago: float = 30.0) -> dict[str, str]:
    """Writes one trace per pair (two models, every tenth one failed); returns trace id → intent."""
    records = []
    for n, (_intent, prompt) in enumerate(pairs):
        extra: dict[str, Any] = {"model": "openai/gpt-4o" if n % 2 else "openai/gpt-4o-mini"}
        if n % 10 == 0:
            extra.update(status=502, error_class="upstream_error", cost_total_usd=None)
        records.append(record(project_id, messages(prompt), minutes_ago + n * 0.01, **extra))
    ids = write(records)
    return {t: intent for t, (intent, _p) in zip(ids, pairs, strict=True)}


def finish(run: ClusteringRun, timeout: float = 120.0) -> ClusteringRun:
    """Runs a queued run here, or waits for the worker that took it (a session where the server,
    and so the embedded worker, started earlier consumes the task run_create enqueued)."""
    run_execute(run_id=run.pk)
    deadline = time.monotonic() + timeout
    while True:
        run.refresh_from_db()
        if run.finished:
            return run
        assert time.monotonic() < deadline, f"run {run.pk} stuck in {run.status}/{run.phase}"
        time.sleep(0.1)
