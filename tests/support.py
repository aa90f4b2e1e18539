"""Helpers for tests."""

from __future__ import annotations

import time
from typing import Any


def read_trace(trace_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The trace row as written to ClickHouse. The server submits a trace just after the answer
    goes out, so this waits for it (flushing the writer) up to `timeout`."""
    from opentracy_site import clickhouse
    from traces.writer import get_writer

    deadline = time.monotonic() + timeout
    while True:
        get_writer().flush()
        columns, rows = clickhouse.query("SELECT * FROM traces WHERE trace_id = {id:UUID}", {"id": trace_id})
        if rows:
            return dict(zip(columns, rows[0], strict=True))
        assert time.monotonic() < deadline, f"trace {trace_id} not found"
        time.sleep(0.05)


def clear_of_midnight(margin_s: float = 30.0) -> None:
    """Sleep past the next UTC midnight when it is less than `margin_s` away: for a test whose
    requests must all fall in one budget day (and month), as gateway/limits.py keys spend by the
    UTC day and month of each trace."""
    left = 86_400 - time.time() % 86_400
    if left < margin_s:
        time.sleep(left + 0.1)
