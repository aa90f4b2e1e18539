"""Full-text search over the inverted text indexes (m0008, traces/ch_sql.py): the same substring
matches whether a part has its index yet or not, the index in the plan, and the migration that
rebuilt the traces table safe to run again."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta

from opentracy_site import clickhouse
from traces.ch_sql import REBUILT_TABLE, TEXT_INDEX_STATEMENTS, TEXT_INDEXES, TRACE_COLUMNS
from traces.filters import TraceFilters, index_runs, where
from traces.migrations_ch import statements
from traces.selectors import trace_list
from traces.writer import INSERT_SETTINGS, encode, get_writer

_PIDS = itertools.count(950_001, 10)
NOW = datetime.now(UTC)


def _write(project_id: int, prompts: list[str], answer: str = "ok") -> list[str]:
    writer = get_writer()
    ids = []
    for i, prompt in enumerate(prompts):
        trace_id = str(uuid.uuid4())
        ids.append(trace_id)
        writer.submit(
            {
                "trace_id": trace_id,
                "project_id": project_id,
                "timestamp": (NOW - timedelta(minutes=i)).timestamp(),
                "requested_model": "openai/gpt-4o-mini",
                "provider": "openai",
                "request_messages": f'[{{"role": "user", "content": "{prompt}"}}]',
                "response_message": f'{{"role": "assistant", "content": "{answer}"}}',
                "latency_ms": 100.0,
            }
        )
    writer.flush()
    return ids


def test_runs_added_for_the_index() -> None:
    assert index_runs("holding") == []  # one run: the pattern itself is what the index answers
    assert index_runs("TX-3f9a2c1b0d") == ["3f9a2c1b0d"]  # "tx" is too short to help
    assert index_runs("lost my card payment") == ["payment", "card"]
    assert index_runs("ab-cd") == [] and index_runs("naïve") == []
    assert index_runs("über-straße") == ["straße", "über"]  # non-ASCII letters belong to tokens


def test_substring_search_is_the_same_before_and_after_the_index_is_built() -> None:
    pid = next(_PIDS)
    a, b, c, d = _write(
        pid, ["my order TX-3f9a2c1b0d is late", "reference 3f9a2c1b0d only", "holding my card", "on hold"]
    )
    (e,) = _write(pid, ["something else"], answer="your TX-3f9a2c1b0d refund")
    expected = {
        "tx-3f9a2c1b0d": {a, e},  # prompt or response
        "3f9a2c1b0d": {a, b, e},
        "ldin": {c},  # a fragment of a word
        "hold": {c, d},
        "Order TX-3F9A": {a},  # case-insensitive, a phrase cut mid-token
        "x-3f9a2c1b0d is l": {a},
        "3f9a2c1b0dd": set(),
    }

    def found() -> dict[str, set[str]]:
        return {q: {t["trace_id"] for t in trace_list(project_id=pid, filters=TraceFilters(q=q))[0]} for q in expected}

    assert found() == expected  # fresh parts: no text index yet, read whole
    clickhouse.command("OPTIMIZE TABLE traces FINAL")
    _c, rows = clickhouse.query(
        "SELECT name, data_compressed_bytes FROM system.data_skipping_indices"
        " WHERE database = currentDatabase() AND table = 'traces'"
    )
    assert all(dict(rows)[name] > 0 for name in TEXT_INDEXES)
    assert found() == expected

    clauses, params = where(pid, TraceFilters(q="TX-3f9a2c1b0d"))
    sql = f"EXPLAIN indexes = 1 SELECT count() FROM traces WHERE {' AND '.join(clauses)}"  # noqa: S608
    plan = clickhouse.query(sql, params)
    text = "\n".join(str(r[0]) for r in plan[1])
    assert all(name in text for name in TEXT_INDEXES)


def _hourly_requests(pid: int) -> int:
    _c, rows = clickhouse.query("SELECT sum(requests) FROM traces_hourly WHERE project_id = {p:UInt64}", {"p": pid})
    return int(rows[0][0])


def test_the_rebuild_migration_keeps_every_row_and_the_rollup_when_run_again() -> None:
    """m0008 has run for the session's schema; running it again (a rerun after a failure) copies
    the table once more: every row and column kept, the rollup view back and firing once."""
    pid = next(_PIDS)
    first, _second, _third = _write(pid, ["first TX-0000000001", "second", "third"])
    columns = ", ".join(TRACE_COLUMNS)
    snapshot = f"SELECT {columns} FROM traces ORDER BY project_id, timestamp, trace_id"  # noqa: S608
    before = clickhouse.query(snapshot)[1]

    for statement in TEXT_INDEX_STATEMENTS:
        for ddl in statements(statement):
            clickhouse.command(ddl)

    assert clickhouse.query(snapshot)[1] == before
    _c, tables = clickhouse.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()"
        " AND name IN ('traces', {rebuilt:String})",
        {"rebuilt": REBUILT_TABLE},
    )
    (name, ddl), *rest = tables
    assert name == "traces" and not rest
    assert "index_granularity_bytes = 1048576, min_compress_block_size = 16384" in ddl and "ngram" not in ddl
    assert "min_age_to_force_merge_on_partition_only = 1" in ddl
    assert _hourly_requests(pid) == 3
    _write(pid, ["fourth"])
    assert _hourly_requests(pid) == 4
    assert [t["trace_id"] for t in trace_list(project_id=pid, filters=TraceFilters(q="tx-0000000001"))[0]] == [first]


def test_a_partition_left_alone_is_merged_and_gets_its_text_index() -> None:
    """The last parts of a month would never merge by themselves; the table's force-merge settings
    (an hour in production, 1 s here) merge them into one part, which builds the text indexes."""
    clickhouse.command("DROP TABLE IF EXISTS traces_force_probe")
    clickhouse.command("CREATE TABLE traces_force_probe AS traces")
    try:
        for n in range(3):  # three inserts as the writer makes them: three parts without text indexes
            record = {"trace_id": str(uuid.uuid4()), "project_id": 1, "timestamp": NOW.timestamp()}
            blob = encode([{**record, "request_messages": f'[{{"content": "part {n}"}}]'}])
            clickhouse.insert_json("traces_force_probe", blob, list(TRACE_COLUMNS), INSERT_SETTINGS)
        parts = (
            "SELECT count() FROM system.parts"
            " WHERE database = currentDatabase() AND table = 'traces_force_probe' AND active"
        )
        assert clickhouse.query(parts)[1][0][0] == 3  # tiny parts: nothing merges them by itself
        clickhouse.command("ALTER TABLE traces_force_probe MODIFY SETTING min_age_to_force_merge_seconds = 1")
        deadline = time.monotonic() + 30
        while clickhouse.query(parts)[1][0][0] > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        _c, rows = clickhouse.query(
            "SELECT name, data_compressed_bytes FROM system.data_skipping_indices"
            " WHERE database = currentDatabase() AND table = 'traces_force_probe'"
        )
        assert clickhouse.query(parts)[1][0][0] == 1
        assert all(dict(rows)[name] > 0 for name in TEXT_INDEXES)
    finally:
        clickhouse.command("DROP TABLE traces_force_probe")
