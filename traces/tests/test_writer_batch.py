"""The trace writer's batch path: deep queues give larger batches, a batch is priced per model
exactly as each trace would be alone, spend is summed per day, and the JSON insert stores every
column as the Native insert did."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from gateway import limits
from gateway.models import ModelPrice, Project
from opentracy_site import clickhouse
from traces.ch_sql import TRACE_COLUMNS
from traces.cost import compute_cost, invalidate_overrides
from traces.writer import TraceWriter, _account, insert, price


def _writer(tmp_path: Path, **kw: Any) -> TraceWriter:
    opts: dict[str, Any] = {"batch_size": 10, "interval_s": 0.05, "queue_size": 10_000, "replay_interval_s": 60}
    return TraceWriter(spool_dir=tmp_path, **{**opts, **kw})


def _rec(**kw: Any) -> dict[str, Any]:
    return {"trace_id": str(uuid.uuid4()), "timestamp": time.time(), "project_id": 987655, "status": 200, **kw}


def test_a_deep_queue_is_taken_in_larger_batches(tmp_path: Path) -> None:
    writer = _writer(tmp_path, max_batch_size=300)
    for _ in range(700):
        writer.submit(_rec())  # the thread is not running: the queue is 700 deep
    sizes = [len(writer._collect()[0]) for _ in range(3)]
    assert sizes == [300, 300, 100] and writer.queue_depth() == 0


def test_light_traffic_waits_for_the_interval_not_for_a_full_batch(tmp_path: Path) -> None:
    writer = _writer(tmp_path, interval_s=0.2)
    writer.submit(_rec())
    t0 = time.monotonic()
    batch, flushes = writer._collect()
    assert len(batch) == 1 and not flushes and 0.15 < time.monotonic() - t0 < 2


def test_flush_waits_for_what_came_before_it_without_waiting_for_the_interval(tmp_path: Path) -> None:
    writer = _writer(tmp_path, batch_size=1000, interval_s=30)  # only a flush ends a batch this small early
    records = [_rec() for _ in range(25)]
    writer.start()
    for r in records:
        writer.submit(r)
    t0 = time.monotonic()
    writer.flush()
    assert time.monotonic() - t0 < 10 and writer.stats["written"] == 25 and writer.queue_depth() == 0
    writer.stop()
    _c, rows = clickhouse.query(
        "SELECT count() FROM traces WHERE trace_id IN {ids:Array(UUID)}",
        {"ids": [uuid.UUID(r["trace_id"]) for r in records]},
    )
    assert rows[0][0] == 25


def test_a_full_queue_spools_every_extra_trace_and_counts_it(tmp_path: Path) -> None:
    writer = _writer(tmp_path, queue_size=3)
    for _ in range(8):
        writer.submit(_rec())
    assert writer.queue_depth() == 3 and writer.stats["queue_full"] == 5 and writer.stats["spilled"] == 5
    assert sum(len(p.read_bytes().splitlines()) for p in writer.pending_spool_files()) == 5
    assert writer.replay() == 5 and not writer.pending_spool_files()


@pytest.mark.django_db
def test_batch_pricing_equals_pricing_each_trace(people: dict[str, Any]) -> None:
    project: Project = people["project"]
    ModelPrice.objects.create(
        project=project, model="openai/gpt-4o", input_per_mtok=Decimal("1.5"), output_per_mtok=Decimal("7")
    )
    invalidate_overrides()
    models = [
        ("openai", "openai/gpt-4o-mini"),
        ("openai", "openai/gpt-4o"),  # overridden in one project only
        ("anthropic", "anthropic/claude-haiku-4-5"),
        ("google", "google/gemini-1.5-pro"),  # tiered above 128k prompt tokens
        ("openai", "openai/no-such-model"),  # no price anywhere: unknown, never 0
        ("local", "local/smollm2"),
        ("", ""),
    ]
    records = [
        _rec(
            project_id=pid,
            provider=provider,
            resolved_model=model,
            prompt_tokens=prompt,
            completion_tokens=17 * i,
            cached_tokens=prompt // 4 if i % 3 == 0 else 0,
            status=200 if i % 11 else 429,
        )
        for i, (pid, (provider, model), prompt) in enumerate(
            (pid, m, prompt) for pid in (project.id, 999) for m in models for prompt in (900, 200_000)
        )
    ]
    records.append(_rec(provider="openai", resolved_model="openai/gpt-4o-mini", cost_total_usd=0.5))  # kept
    price(records)
    for r in records[:-1]:
        if r["status"] != 200:
            assert "cost_total_usd" not in r
            continue
        expected = compute_cost(
            project_id=r["project_id"],
            provider=r["provider"],
            model=r["resolved_model"].split("/", 1)[-1],
            prompt=r["prompt_tokens"],
            completion=r["completion_tokens"],
            cached=r["cached_tokens"],
        )
        assert (r["cost_input_usd"], r["cost_output_usd"], r["cost_total_usd"]) == expected, r
    by_model = {(r["project_id"], r["resolved_model"]): r.get("cost_total_usd") for r in records if r["status"] == 200}
    assert by_model[(project.id, "openai/no-such-model")] is None and by_model[(999, "local/smollm2")] == 0.0
    assert by_model[(project.id, "openai/gpt-4o")] != by_model[(999, "openai/gpt-4o")]  # the override applies
    assert records[-1]["cost_total_usd"] == 0.5 and "cost_input_usd" not in records[-1]


def test_spend_is_summed_per_project_and_day_and_ingest_is_left_out() -> None:
    day1 = datetime(2026, 3, 31, 23, 59, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 4, 1, 0, 1, tzinfo=UTC).timestamp()
    names = ("5:2026-03-31", "5:2026-04-01", "5:2026-03", "5:2026-04", "6:2026-04-01")
    limits.reset()
    # Periods seeded, as the first budget check does: in memory (embedded) or in Redis (distributed).
    redis_client = redis.Redis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None
    for name in names:
        if redis_client is not None:
            redis_client.set(f"ot:spend:{name}", 0.0)
        else:
            limits._spend[name] = 0.0
    records: list[dict[str, Any]] = [
        {"project_id": 5, "timestamp": day1, "cost_total_usd": 0.25},
        {"project_id": 5, "timestamp": day1 - 3600, "cost_total_usd": 0.5},
        {"project_id": 5, "timestamp": day2, "cost_total_usd": 1.0},
        {"project_id": 6, "timestamp": day2, "cost_total_usd": 2.0},
        {"project_id": 6, "timestamp": day2, "cost_total_usd": 4.0, "endpoint": "ingest"},
        {"project_id": 6, "timestamp": day2, "cost_total_usd": None},
    ]
    _account(records)
    if redis_client is not None:
        spent = {name: float(redis_client.get(f"ot:spend:{name}") or 0) for name in names}
        redis_client.close()
    else:
        spent = {k: v for k, v in limits._spend.items() if k[:2] in ("5:", "6:")}
    assert spent == {
        "5:2026-03-31": 0.75,
        "5:2026-03": 0.75,
        "5:2026-04-01": 1.0,
        "5:2026-04": 1.0,
        "6:2026-04-01": 2.0,
    }
    limits.reset()


def _native_row(record: dict[str, Any]) -> list[Any]:
    """What the writer inserted before it sent JSON (clickhouse-connect's Native rows)."""
    r = {**TRACE_COLUMNS, **record}
    r["trace_id"] = uuid.UUID(r["trace_id"])
    r["timestamp"] = datetime.fromtimestamp(r["timestamp"], tz=UTC)
    return [r[c] for c in TRACE_COLUMNS]


def test_the_json_insert_stores_every_column_as_the_native_insert_did() -> None:
    full = _rec(
        api_key_id=42,
        endpoint="messages",
        requested_model="smart",
        alias="smart",
        resolved_model="anthropic/claude-sonnet-4",
        provider="anthropic",
        request_messages='[{"role":"user","content":"say \\"hi\\"\\n\\tthen \\\\ stop — 日本語 🚀"}]',
        request_params='{"temperature":0.2}',
        response_message='{"role":"assistant","content":"«hi»\\r\\n\'quoted\' \\u0000"}',
        finish_reason="stop",
        stream=True,
        prompt_tokens=12,
        completion_tokens=5,
        cached_tokens=3,
        cost_input_usd=0.001,
        cost_output_usd=0.0025,
        cost_total_usd=0.0035,
        latency_ms=812.25,
        ttft_ms=95.5,
        overhead_ms=0.375,
        attempts=[("anthropic/claude-sonnet-4", 429, "rate_limit_error", 20.5), ["x/y", 200, "", 700.0]],
        retries=1,
        fallbacks=1,
        user="ü-ser",
        metadata={"env": "prod", "quote": 'a"b', "ключ": "значение"},
        tags=["beta", "ü"],
        retention_days=365,
        cooldowns_started=0,  # not a column: skipped
    )
    minimal = _rec(timestamp=time.time() - 0.0004)  # every other field takes TRACE_COLUMNS' default
    failed = _rec(status=502, error_class="server_error", error_message="bad\ngateway", ttft_ms=None)
    records = [full, minimal, failed]
    native = [{**r, "trace_id": str(uuid.uuid4())} for r in records]
    clickhouse.insert("traces", [_native_row(r) for r in native], list(TRACE_COLUMNS))
    insert(records)
    cols = ", ".join(f"`{c}`" for c in TRACE_COLUMNS)
    ids = [uuid.UUID(r["trace_id"]) for r in records + native]
    _c, rows = clickhouse.query(f"SELECT {cols} FROM traces WHERE trace_id IN {{ids:Array(UUID)}}", {"ids": ids})  # noqa: S608
    stored = {str(r[0]): r[1:] for r in rows}
    for json_rec, native_rec in zip(records, native, strict=True):
        assert stored[json_rec["trace_id"]] == stored[native_rec["trace_id"]]
    got = dict(zip(TRACE_COLUMNS, (None, *stored[full["trace_id"]]), strict=True))
    assert got["request_messages"] == full["request_messages"] and got["metadata"] == full["metadata"]
    first = {
        "target": "anthropic/claude-sonnet-4",
        "status": 429,
        "error_class": "rate_limit_error",
        "latency_ms": 20.5,
    }
    assert got["attempts"][0] == first and len(got["attempts"]) == 2
    assert got["cost_total_usd"] == 0.0035 and got["retention_days"] == 365 and got["user"] == "ü-ser"
    empty = dict(zip(TRACE_COLUMNS, (None, *stored[minimal["trace_id"]]), strict=True))
    assert empty["cost_total_usd"] is None and empty["ttft_ms"] is None and empty["status"] == 200
    assert (empty["request_messages"], empty["request_params"], empty["endpoint"]) == ("[]", "{}", "chat")


def test_text_indexes_are_left_to_merges_and_search_answers_the_same_before_and_after() -> None:
    from traces.ch_sql import TEXT_INDEXES
    from traces.writer import INSERT_SETTINGS, encode

    clickhouse.command("DROP TABLE IF EXISTS traces_index_probe")
    clickhouse.command("CREATE TABLE traces_index_probe AS traces")
    try:
        for word in ("apple", "kiwi"):  # two inserts: two parts for the merge to join
            records = [_rec(request_messages=f'[{{"role":"user","content":"{word} {i}"}}]') for i in range(50)]
            clickhouse.insert_json("traces_index_probe", encode(records), list(TRACE_COLUMNS), INSERT_SETTINGS)

        def index_bytes() -> dict[str, int]:
            _c, rows = clickhouse.query(
                "SELECT name, data_compressed_bytes FROM system.data_skipping_indices"
                " WHERE database = currentDatabase() AND table = 'traces_index_probe'"
            )
            return dict(rows)

        def kiwis() -> int:
            _c, rows = clickhouse.query(
                "SELECT count() FROM traces_index_probe WHERE lowerUTF8(request_messages) LIKE '%kiwi 4%'"
            )
            return int(rows[0][0])

        fresh = index_bytes()
        assert all(fresh[name] == 0 for name in TEXT_INDEXES) and fresh["idx_tags"] > 0
        assert kiwis() == 11  # "kiwi 4" and "kiwi 40".."kiwi 49", read without the index
        clickhouse.command("OPTIMIZE TABLE traces_index_probe FINAL")
        assert all(index_bytes()[name] > 0 for name in TEXT_INDEXES)
        assert kiwis() == 11
    finally:
        clickhouse.command("DROP TABLE traces_index_probe")
