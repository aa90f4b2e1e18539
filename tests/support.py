"""Helpers for tests."""

from __future__ import annotations

from typing import Any


def read_trace(trace_id: str) -> dict[str, Any]:
    """The trace row as written to ClickHouse, after the writer has flushed."""
    from opentracy_site import clickhouse
    from traces.writer import get_writer

    get_writer().flush()
    columns, rows = clickhouse.query("SELECT * FROM traces WHERE trace_id = {id:UUID}", {"id": trace_id})
    assert rows, f"trace {trace_id} not found"
    return dict(zip(columns, rows[0], strict=True))
