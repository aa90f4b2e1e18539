"""Aggregates (rollup and raw scan agree), filters, annotations and the skip indexes, on chDB."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.http import QueryDict

from opentracy_site import clickhouse
from traces import histogram
from traces.filters import FilterError, TraceFilters, like_pattern, parse_filters
from traces.selectors import trace_get, trace_iter, trace_list
from traces.services import annotation_add, retention_set
from traces.stats import by_model, overview, timeseries
from traces.writer import get_writer

pytestmark = pytest.mark.django_db(transaction=True)
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
# A new project per test (chDB outlives the test database); a random pick collided with an earlier
# test's project often enough to fail CI, so ids are counted, 10 apart (tests use pid + 1 as outsider).
_PIDS = itertools.count(900_001, 10)


def _record(project_id: int, hours_ago: float, **fields: Any) -> dict[str, Any]:
    record = {
        "trace_id": str(uuid.uuid4()),
        "project_id": project_id,
        "timestamp": (NOW - timedelta(hours=hours_ago)).timestamp(),
        "api_key_id": 7,
        "requested_model": "openai/gpt-4o-mini",
        "resolved_model": "openai/gpt-4o-mini",
        "provider": "openai",
        "request_messages": '[{"role": "user", "content": "hello"}]',
        "response_message": '{"role": "assistant", "content": "hi"}',
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": 100.0,
        "cost_total_usd": 0.001,
    }
    return {**record, **fields}


@pytest.fixture
def seeded() -> dict[str, Any]:
    """Project 900001 (ids far from the fixtures'): 3 hours of traffic on two models, one error,
    streamed calls with a TTFT; project 900002 has one trace that must never show up."""
    pid = next(_PIDS)
    records = [
        _record(pid, 2, latency_ms=100.0),
        _record(pid, 2, latency_ms=300.0, stream=True, ttft_ms=40.0),
        _record(pid, 1, latency_ms=200.0, metadata={"team": "search"}, tags=["gold"]),
        _record(
            pid,
            1,
            resolved_model="anthropic/claude-haiku-4-5",
            requested_model="smart",
            alias="smart",
            provider="anthropic",
            latency_ms=900.0,
            cost_total_usd=0.01,
            request_messages='[{"role": "user", "content": "Invoice 100%_done ZEBRA"}]',
        ),
        _record(pid, 0, status=502, error_class="upstream_error", cost_total_usd=None, latency_ms=50.0),
        _record(pid + 1, 1, latency_ms=5.0),
    ]
    writer = get_writer()
    for r in records:
        writer.submit(r)
    writer.flush()
    return {"pid": pid, "ids": [r["trace_id"] for r in records]}


def _window(**kw: Any) -> TraceFilters:
    return TraceFilters(since=NOW - timedelta(hours=3), until=NOW + timedelta(hours=1), **kw)


def test_overview_reads_the_rollup_and_agrees_with_a_raw_scan(seeded: dict[str, Any]) -> None:
    pid = seeded["pid"]
    rollup = by_model(project_id=pid, filters=_window())
    raw = by_model(project_id=pid, filters=_window(min_latency_ms=0))  # a raw-only filter forces a scan
    assert (rollup["source"], raw["source"]) == ("traces_hourly", "traces")
    totals = rollup["totals"]
    assert (totals["requests"], totals["errors"], totals["unpriced"]) == (5, 1, 0)
    assert totals["cost_usd"] == pytest.approx(0.013) and totals["prompt_tokens"] == 50
    assert totals["error_rate"] == 0.2 and totals["ttft_p50_ms"] == 40.0
    assert [(m["model"], m["requests"]) for m in rollup["models"]] == [
        ("openai/gpt-4o-mini", 4),
        ("anthropic/claude-haiku-4-5", 1),
    ]
    for a, b in zip(rollup["models"], raw["models"], strict=True):
        assert a == b
    assert rollup["totals"] == raw["totals"]
    # Median of 50, 100, 200, 300, 900 from its histogram bucket; p99 is the maximum, exact.
    assert totals["latency_p50_ms"] == pytest.approx(200, rel=histogram.MAX_RELATIVE_ERROR)
    assert totals["latency_p99_ms"] == 900.0


def test_timeseries_has_every_bucket_and_the_same_numbers_both_ways(seeded: dict[str, Any]) -> None:
    pid = seeded["pid"]
    hourly = timeseries(project_id=pid, filters=_window(), bucket="hour")
    assert hourly["source"] == "traces_hourly" and len(hourly["points"]) == 5
    assert [p["requests"] for p in hourly["points"]] == [0, 2, 2, 1, 0]
    raw = timeseries(project_id=pid, filters=_window(status=""), bucket="minute")
    assert raw["source"] == "traces" and len(raw["points"]) == 240
    assert sum(p["requests"] for p in raw["points"]) == 5
    anthropic = timeseries(project_id=pid, filters=_window(provider="anthropic"), bucket="hour")
    assert anthropic["points"][2]["cost_usd"] == 0.01
    with pytest.raises(ValueError, match="more than 2000 points"):
        timeseries(project_id=pid, filters=TraceFilters(since=NOW - timedelta(days=30), until=NOW), bucket="minute")


@pytest.mark.parametrize("bucket", ["hour", "minute", ""])
@pytest.mark.parametrize("extra", [{}, {"provider": "openai"}, {"status": "ok"}])
def test_the_overview_query_answers_as_by_model_and_timeseries(
    seeded: dict[str, Any], bucket: str, extra: dict[str, Any]
) -> None:
    """One query for the page (rollup, raw table, and the minute case that mixes them)."""
    pid, f = seeded["pid"], _window(**extra)
    models, series = overview(project_id=pid, filters=f, bucket=bucket)
    assert models == by_model(project_id=pid, filters=f)
    assert series == timeseries(project_id=pid, filters=f, bucket=bucket)
    assert sum(p["requests"] for p in series["points"]) == models["totals"]["requests"] > 0


def test_whole_days_come_from_the_daily_rollup_and_agree_with_a_raw_scan() -> None:
    """A window of 6 days and a few hours: its whole UTC days are read from traces_daily, the hours
    at either end from traces_hourly, and every figure equals the raw scan's."""
    pid = next(_PIDS)
    writer = get_writer()
    for i in range(40):  # every 3.6 h over 144 h, two models, some streamed, one error a day
        extra: dict[str, Any] = (
            {"provider": "anthropic", "resolved_model": "anthropic/claude-haiku-4-5"} if i % 3 == 0 else {}
        )
        if i % 6 == 1:
            extra.update(status=500, error_class="upstream_error", cost_total_usd=None)
        stream = {"stream": True, "ttft_ms": 20.0 + i} if i % 4 == 0 else {}
        writer.submit(_record(pid, 0.2 + i * 3.6, latency_ms=50.0 + 17 * i, **extra, **stream))
    writer.flush()
    since = NOW - timedelta(days=6, hours=2)

    def window(**kw: Any) -> TraceFilters:
        return TraceFilters(since=since, until=NOW, **kw)

    for extra in ({}, {"provider": "anthropic"}):
        daily, raw = (
            by_model(project_id=pid, filters=window(**extra)),
            by_model(project_id=pid, filters=window(min_latency_ms=0, **extra)),
        )
        assert (daily["source"], raw["source"]) == ("traces_daily", "traces")
        assert daily["models"] == raw["models"] and daily["totals"] == raw["totals"]
        assert daily["totals"]["requests"] == (40 if not extra else 14)
        days = timeseries(project_id=pid, filters=window(**extra), bucket="day")
        raw_days = timeseries(project_id=pid, filters=window(min_latency_ms=0, **extra), bucket="day")
        assert days["source"] == "traces_daily" and days["points"] == raw_days["points"]
        assert len(days["points"]) == (NOW.date() - since.date()).days + 1  # 8 when NOW is before 02:00 UTC
        assert overview(project_id=pid, filters=window(**extra), bucket="day") == (daily, days)
    hours = timeseries(project_id=pid, filters=window(), bucket="hour")
    assert hours["source"] == "traces_hourly" and sum(p["requests"] for p in hours["points"]) == 40


def test_filters_and_text_search(seeded: dict[str, Any]) -> None:
    pid, ids = seeded["pid"], seeded["ids"]

    def found(**kw: Any) -> set[str]:
        return {t["trace_id"] for t in trace_list(project_id=pid, filters=_window(**kw), limit=50)[0]}

    assert found() == set(ids[:5])
    assert found(q="100%_DONE") == {ids[3]} and found(q="100%x") == set()  # % and _ are literal
    assert found(q="zebra", provider="anthropic") == {ids[3]}
    assert found(min_latency_ms=250) == {ids[1], ids[3]} and found(min_cost=0.005) == {ids[3]}
    assert found(api_key_id=7) == set(ids[:5]) and found(api_key_id=8) == set()
    assert found(status="502") == {ids[4]} and found(alias="smart") == {ids[3]}
    assert found(metadata_key="team", metadata_value="search") == {ids[2]}
    assert found(tag="gold") == {ids[2]}


def test_annotations_survive_merges_and_drive_the_tag_filter(seeded: dict[str, Any]) -> None:
    pid, ids = seeded["pid"], seeded["ids"]
    annotation_add(project_id=pid, trace_id=uuid.UUID(ids[0]), user_id=1, tags_add=["review"])
    annotation_add(project_id=pid, trace_id=uuid.UUID(ids[2]), user_id=1, tags_remove=["gold"])
    annotation_add(project_id=pid, trace_id=uuid.UUID(ids[0]), user_id=2, score=8, comment="good")
    annotation_add(project_id=pid, trace_id=uuid.UUID(ids[0]), user_id=3, score=3, comment="on second thought")
    clickhouse.command("OPTIMIZE TABLE trace_annotations FINAL")
    clickhouse.command("OPTIMIZE TABLE traces FINAL")
    trace = trace_get(project_id=pid, trace_id=uuid.UUID(ids[0]))
    assert trace is not None and trace["tags"] == ["review"]
    assert trace["feedback"]["score"] == 3 and trace["feedback"]["comment"] == "on second thought"
    assert {t["trace_id"] for t in trace_list(project_id=pid, filters=_window(tag="review"))[0]} == {ids[0]}
    assert trace_list(project_id=pid, filters=_window(tag="gold"))[0] == []
    # Another project's id never reaches these traces.
    assert trace_get(project_id=pid + 1, trace_id=uuid.UUID(ids[0])) is None


def test_iter_pages_through_everything_once(seeded: dict[str, Any]) -> None:
    got = [t["trace_id"] for t in trace_iter(project_id=seeded["pid"], filters=_window(), page=2)]
    assert sorted(got) == sorted(seeded["ids"][:5]) and len(got) == 5


def test_skip_indexes_are_used() -> None:
    plan = clickhouse.query(
        "EXPLAIN indexes = 1 SELECT count() FROM traces WHERE project_id = 1 AND "
        "(lowerUTF8(request_messages) LIKE {q:String}) AND has(tags, 'x') AND mapContains(metadata, 'k')",
        {"q": like_pattern("needle")},
    )[1]
    text = "\n".join(str(r[0]) for r in plan)
    assert "idx_prompt_text" in text and "idx_tags" in text and "idx_metadata_keys" in text


@pytest.mark.parametrize(
    "query, field",
    [
        ("since=yesterday", "since"),
        ("status=oops", "status"),
        ("min_cost=-1", "min_cost"),
        ("min_latency_ms=abc", "min_latency_ms"),
        ("api_key=1.5", "api_key"),
        ("range=2y", "range"),
        ("metadata_value=x", "metadata_value"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("model=" + "m" * 501, "model"),
    ],
)
def test_bad_filters_name_the_field(query: str, field: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filters(QueryDict(query))
    assert field in err.value.errors


def test_named_ranges_and_links() -> None:
    f = parse_filters(QueryDict("range=24h&model=m&metadata=team%3Dsearch"), default_range="24h")
    assert f.since is not None and abs((datetime.now(UTC) - f.since) - timedelta(days=1)) < timedelta(seconds=5)
    assert (f.metadata_key, f.metadata_value) == ("team", "search")
    assert f.query_dict() == {"model": "m", "metadata_key": "team", "metadata_value": "search", "range": "24h"}


def test_retention_is_applied_in_clickhouse(seeded: dict[str, Any], people: dict[str, Any]) -> None:
    project = people["project"]
    writer = get_writer()
    old, new = _record(project.id, 24 * 5), _record(project.id, 1)
    for r in (old, new):
        writer.submit(r)
    writer.flush()
    retention_set(project=project, days=3)
    project.refresh_from_db()
    assert project.retention_days == 3
    clickhouse.command("OPTIMIZE TABLE traces FINAL")
    clickhouse.command("OPTIMIZE TABLE traces_hourly FINAL")
    clickhouse.command("OPTIMIZE TABLE traces_daily FINAL")
    _cols, rows = clickhouse.query(
        "SELECT toString(trace_id), retention_days FROM traces WHERE project_id = {p:UInt64}", {"p": project.id}
    )
    assert rows == [(new["trace_id"], 3)]
    totals = by_model(project_id=project.id, filters=TraceFilters(since=NOW - timedelta(days=30)))["totals"]
    assert totals["requests"] == 1  # the rollups dropped the expired hour and day too
    with pytest.raises(ValidationError):
        retention_set(project=project, days=0)


def test_retention_set_in_the_admin_reaches_stored_traces(people: dict[str, Any], admin_client: Any) -> None:
    project = people["project"]
    record = _record(project.id, 1)
    get_writer().submit(record)
    get_writer().flush()
    form = {"slug": project.slug, "name": project.name, "budget_period": "month", "retention_days": "30"}
    form.update({"membership_set-TOTAL_FORMS": "0", "membership_set-INITIAL_FORMS": "0"})
    resp = admin_client.post(f"/admin/gateway/project/{project.id}/change/", form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    _cols, rows = clickhouse.query(
        "SELECT retention_days FROM traces WHERE trace_id = {t:UUID}", {"t": record["trace_id"]}
    )
    assert rows == [(30,)]
