"""The only module that talks to ClickHouse (chDB in-process or a server, same driver API).

chDB allows one process per data path, so the process keeps one client; a lock serialises calls
because the embedded engine is not safe to drive from several threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import clickhouse_connect
from django.conf import settings

_lock = threading.RLock()
# One client per URL: the embedded engine is a process-wide singleton, so a client made for a
# path is kept for the life of the process.
_clients: dict[str, Any] = {}


def _make_client(url: str) -> Any:
    if url.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=url)
    return clickhouse_connect.get_client(
        dsn=url, autogenerate_session_id=False, connect_timeout=5, send_receive_timeout=30
    )


def client() -> Any:
    url = settings.CLICKHOUSE_URL
    with _lock:
        if url not in _clients:
            _clients[url] = _make_client(url)
        return _clients[url]


def command(sql: str, parameters: dict[str, Any] | None = None) -> Any:
    with _lock:
        return client().command(sql, parameters=parameters)


def query(
    sql: str, parameters: dict[str, Any] | None = None, column_formats: dict[str, str] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a SELECT; returns (column names, rows). Parameters are bound by the driver;
    column_formats as the driver's (e.g. {"vector": "bytes"}: a String column left undecoded)."""
    with _lock:
        result = client().query(sql, parameters=parameters, column_formats=column_formats)
        return list(result.column_names), list(result.result_rows)


def insert(table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]) -> None:
    with _lock:
        c = client()
        context = c.create_insert_context(table, column_names=list(column_names), data=rows)
        try:
            c.insert(context=context)
        finally:
            # clickhouse-connect's insert context keeps a bound method of itself (a reference cycle)
            # and the rows: left alone, every batch waits for a full GC pass (~25 ms under load,
            # measured by bench/gcprobe). Emptying it frees the batch now.
            vars(context).clear()


def insert_json(table: str, rows: bytes, column_names: Sequence[str], settings: dict[str, Any]) -> None:
    """Insert rows already encoded as JSONEachRow: ClickHouse parses them in C++, so the caller's
    Python work is one orjson call instead of clickhouse-connect's per-value Native serialisation.
    The same raw_insert reaches a server (HTTP body) and chDB (a temp file, INSERT ... FROM INFILE)."""
    with _lock:
        client().raw_insert(table, list(column_names), insert_block=rows, fmt="JSONEachRow", settings=settings)


def ping() -> None:
    """Raises if ClickHouse cannot answer a trivial query."""
    command("SELECT 1")
