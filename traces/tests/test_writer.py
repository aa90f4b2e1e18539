"""The trace writer loses nothing: ClickHouse unreachable mid-run spills to disk and replays;
a full queue spools and says so."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from opentracy_site import clickhouse
from traces.writer import TraceWriter, get_writer

MESSAGES: list[Any] = [{"role": "user", "content": "during the outage"}]


def _count(trace_ids: list[str]) -> int:
    _c, rows = clickhouse.query(
        "SELECT count() FROM traces WHERE trace_id IN {ids:Array(UUID)}", {"ids": [uuid.UUID(t) for t in trace_ids]}
    )
    return int(rows[0][0])


@pytest.mark.django_db(transaction=True)
def test_clickhouse_outage_mid_run_loses_no_trace(client: Any, server_url: str, settings: Any) -> None:
    before = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    writer = get_writer()
    writer.flush()
    spilled_before = writer.stats["spilled"]

    # ClickHouse goes away: the engine now points at a port nobody listens on.
    chdb_url = settings.CLICKHOUSE_URL
    settings.CLICKHOUSE_URL = f"http://127.0.0.1:{free_port()}/default"
    during = [
        client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=i % 2 == 0)
        for i in range(12)
    ]
    assert all(r.status_code == 200 for r in during)  # requests never wait on ClickHouse
    deadline = time.monotonic() + 10  # the last trace is submitted just after its answer
    while writer.stats["spilled"] - spilled_before < 12 and time.monotonic() < deadline:
        writer.flush()
        time.sleep(0.05)
    assert writer.stats["spilled"] - spilled_before == 12
    assert writer.pending_spool_files()
    ready = httpx.get(f"{server_url}/readyz")
    assert ready.status_code == 503 and ready.json()["failing"] == ["clickhouse"]

    # ClickHouse is back: the periodic replay writes every spooled trace, exactly once.
    settings.CLICKHOUSE_URL = chdb_url
    ids = [before.headers["x-opentracy-trace-id"]] + [r.headers["x-opentracy-trace-id"] for r in during]
    deadline = time.monotonic() + 10
    while writer.pending_spool_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not writer.pending_spool_files()
    assert _count(ids) == len(ids)
    metrics = httpx.get(f"{server_url}/metrics").text
    assert "opentracy_traces_spilled_total" in metrics and "opentracy_traces_spool_files 0.0" in metrics


def _record() -> dict[str, Any]:
    return {"trace_id": str(uuid.uuid4()), "timestamp": time.time(), "project_id": 987654, "status": 200}


def test_full_queue_spools_instead_of_dropping(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = TraceWriter(batch_size=10, interval_s=0.05, queue_size=2, spool_dir=tmp_path, replay_interval_s=60)
    records = [_record() for _ in range(5)]
    for r in records:
        writer.submit(r)  # the writer thread is not running yet: the queue fills after two
    assert writer.stats["queue_full"] == 3 and writer.stats["spilled"] == 3
    assert "trace queue full" in caplog.text
    writer.start()  # writes the queued two, and replays the spool as it starts
    writer.flush()
    writer.stop()
    assert writer.stats["written"] == 2 and writer.stats["replayed"] == 3
    assert _count([r["trace_id"] for r in records]) == 5
    assert not list(tmp_path.iterdir())
