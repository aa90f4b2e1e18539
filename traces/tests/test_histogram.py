"""Latency and TTFT quantiles from the rollup's log-bucket histograms (traces/histogram.py), on chDB:
within the documented error of the exact quantiles, the same from the rollup and the raw table,
and the m0004 rebuild safe to rerun."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opentracy_site import clickhouse
from traces import histogram
from traces.ch_migrations import m0004_rollup_histograms
from traces.filters import TraceFilters
from traces.stats import by_model, timeseries
from traces.writer import get_writer

pytestmark = pytest.mark.django_db(transaction=True)
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
QS = (0.5, 0.95, 0.99)


def _latencies(n: int, seed: int) -> list[float]:
    """n latencies shaped like LLM calls (lognormal around 800 ms, a slow tail), plus the edges:
    below 1 ms, exactly 1 ms and past the last bucket (12 min)."""
    rng = random.Random(seed)
    values = [round(rng.lognormvariate(6.7, 0.9), 3) for _ in range(n)]
    return [*values, 0.4, 1.0, 720_000.0]


_PIDS = itertools.count(910_001, 10)  # a new project per test: chDB outlives the test database


@pytest.fixture
def traffic() -> dict[str, Any]:
    """A project with ~400 traces over 6 hours on two models; a third of them streamed (TTFT)."""
    pid = next(_PIDS)
    latencies = _latencies(400, seed=pid)
    rng = random.Random(pid)
    records = []
    for i, latency in enumerate(latencies):
        streamed = i % 3 == 0
        records.append(
            {
                "trace_id": str(uuid.uuid4()),
                "project_id": pid,
                "timestamp": (NOW - timedelta(hours=i % 6, minutes=rng.randint(0, 29))).timestamp(),
                "requested_model": "m-a" if i % 4 else "m-b",
                "resolved_model": "openai/m-a" if i % 4 else "openai/m-b",
                "provider": "openai",
                "latency_ms": latency,
                "stream": streamed,
                "ttft_ms": round(latency * rng.uniform(0.05, 0.3), 3) if streamed else None,
                "cost_total_usd": 0.001,
            }
        )
    writer = get_writer()
    for r in records:
        writer.submit(r)
    writer.flush()
    return {"pid": pid, "records": records}


def _window(**kw: Any) -> TraceFilters:
    return TraceFilters(since=NOW - timedelta(hours=8), until=NOW + timedelta(hours=1), **kw)


def _exact(pid: int, column: str, model: str = "") -> list[float]:
    """ClickHouse's exact quantiles (the order statistic at floor(q * n)) over the raw rows."""
    sql = (
        f"SELECT quantilesExact(0.5, 0.95, 0.99)({column}) FROM traces WHERE project_id = {{p:UInt64}}"  # noqa: S608
        f" AND {column} IS NOT NULL" + (" AND resolved_model = {m:String}" if model else "")
    )
    return list(clickhouse.query(sql, {"p": pid, "m": model})[1][0][0])


def _close(got: float | None, exact: float) -> bool:
    """Within the documented error: 4.76% relative, or 0.5 ms below 1 ms (plus the 0.01 ms rounding)."""
    assert got is not None
    return abs(got - exact) <= max(histogram.MAX_RELATIVE_ERROR * exact, 0.5 if exact < 1 else 0) + 0.01


def test_quantiles_are_within_the_documented_error_of_exact_ones(traffic: dict[str, Any]) -> None:
    pid = traffic["pid"]
    out = by_model(project_id=pid, filters=_window())
    assert out["source"] == "traces_hourly" and out["totals"]["requests"] == len(traffic["records"])
    rows = [(out["totals"], ""), *((m, m["model"]) for m in out["models"])]
    for row, model in rows:
        for name, column in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
            exact = _exact(pid, column, model)
            got = [row[f"{name}_p{round(q * 100)}_ms"] for q in QS]
            assert all(_close(g, e) for g, e in zip(got, exact, strict=True)), (model, name, got, exact)


def test_the_histogram_on_its_own() -> None:
    """Pure read-back: every bucket's answer is within the bound of every value it holds."""
    values = _latencies(300, seed=3)
    rng_values = sorted(values)
    for q in QS:
        exact = rng_values[min(int(q * len(values)), len(values) - 1)]
        # Bucket each value the way the SQL does, then read the quantile back.
        hist = histogram.merge([{_bucket(v): 1} for v in values])
        (got,) = histogram.quantiles(hist, min(values), max(values), [q])
        assert _close(got, exact)
    assert histogram.quantiles({}, None, None, QS) == [None, None, None]
    assert histogram.quantiles({57: 1}, 250.0, 250.0, QS) == [250.0, 250.0, 250.0]  # one value: exact


def _bucket(value: float) -> int:
    return int(clickhouse.query(f"SELECT {histogram.bucket_sql('{v:Float32}')}", {"v": value})[1][0][0])


def test_rollup_and_raw_table_agree(traffic: dict[str, Any]) -> None:
    pid = traffic["pid"]
    rollup = by_model(project_id=pid, filters=_window())
    raw = by_model(project_id=pid, filters=_window(min_latency_ms=0))
    assert raw["source"] == "traces"
    assert rollup["models"] == raw["models"] and rollup["totals"] == raw["totals"]
    hourly = timeseries(project_id=pid, filters=_window(), bucket="hour")
    hourly_raw = timeseries(project_id=pid, filters=_window(min_cost=0), bucket="hour")
    assert hourly["source"] == "traces_hourly" and hourly_raw["source"] == "traces"
    assert hourly["points"] == hourly_raw["points"]
    assert sum(p["requests"] for p in hourly["points"]) == len(traffic["records"])


def test_m0004_reruns_to_the_same_rollup_and_keeps_counting(traffic: dict[str, Any]) -> None:
    pid = traffic["pid"]
    before = by_model(project_id=pid, filters=_window())
    for statement in m0004_rollup_histograms.STATEMENTS:  # as after a failure part way: all again
        clickhouse.command(statement)
    assert by_model(project_id=pid, filters=_window()) == before
    extra = {**traffic["records"][0], "trace_id": str(uuid.uuid4())}
    get_writer().submit(extra)
    get_writer().flush()
    assert by_model(project_id=pid, filters=_window())["totals"]["requests"] == before["totals"]["requests"] + 1
