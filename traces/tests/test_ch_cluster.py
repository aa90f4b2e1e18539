"""The cluster DDL variant (traces/ch_cluster.py, CLICKHOUSE_CLUSTER): every migration rewritten
for a cluster is valid ClickHouse SQL (parsed by ClickHouse itself through chDB's EXPLAIN AST; chDB
has no Keeper, so replicated tables cannot be created here) and has the cluster's shape: replicated
local tables, a Distributed table under each plain name, views on the local tables, column changes
on both halves, indexes and mutations on the local half only."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from django.test import override_settings

from opentracy_site import clickhouse
from traces import ch_migrations
from traces.ch_cluster import for_cluster
from traces.ch_sql import DAILY_STATEMENTS, REBUILT_TABLE, TEXT_INDEX_STATEMENTS
from traces.migrations_ch import LEDGER, statements

CLUSTER = "prod"


def all_statements() -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(ch_migrations.__path__) if m.name.startswith("m"))
    found = [LEDGER]
    for name in names:
        found += importlib.import_module(f"traces.ch_migrations.{name}").STATEMENTS
    return found


def test_every_migration_rewrites_to_valid_sql() -> None:
    for statement in all_statements():
        for ddl in for_cluster(statement, CLUSTER):
            _columns, rows = clickhouse.query(f"EXPLAIN AST {ddl}")
            assert rows, ddl


def test_tables_are_replicated_and_distributed_under_their_plain_names() -> None:
    created = [d for s in all_statements() for d in for_cluster(s, CLUSTER) if d.lstrip().startswith("CREATE TABLE")]
    local = {m.group(1) for d in created if (m := re.search(r"CREATE TABLE IF NOT EXISTS (\w+)_local ON", d))}
    tables = {"traces", "traces_hourly", "traces_daily", "trace_annotations", "prompt_embeddings"}
    assert tables | {"opentracy_migrations"} <= local
    for name in local:
        replicated = [d for d in created if f"{name}_local ON CLUSTER 'prod' (" in d]
        assert replicated and all("ENGINE = Replicated" in d and "'{replica}'" in d for d in replicated), name
        assert all(f"/{{database}}/{name}_local'" in d for d in replicated)
        assert any(
            f"TABLE IF NOT EXISTS {name} ON CLUSTER 'prod' AS {name}_local" in d
            and f"Distributed('prod', currentDatabase(), '{name}_local'" in d
            for d in created
        ), name
    traces = next(d for d in created if d.startswith("CREATE TABLE IF NOT EXISTS traces ON"))
    assert traces.endswith("cityHash64(trace_id))")  # spread by trace, not piled up by project
    embeddings = next(d for d in created if "prompt_embeddings_local" in d and "Replicated" in d)
    assert "ReplicatedReplacingMergeTree(" in embeddings  # the engine family is kept


def test_views_columns_indexes_and_drops() -> None:
    view = "CREATE MATERIALIZED VIEW traces_hourly_mv TO traces_hourly AS SELECT project_id FROM traces GROUP BY 1"
    (rewritten,) = for_cluster(view, CLUSTER)
    assert "ON CLUSTER 'prod' TO traces_hourly_local" in rewritten and "FROM traces_local" in rewritten
    (chained,) = for_cluster(DAILY_STATEMENTS[-1], CLUSTER)  # the daily view, fed by the hourly rollup
    assert "TO traces_daily_local" in chained and "FROM traces_hourly_local" in chained
    column = for_cluster("ALTER TABLE traces ADD COLUMN IF NOT EXISTS x UInt8", CLUSTER)
    assert [c.split(" ON")[0] for c in column] == ["ALTER TABLE traces_local", "ALTER TABLE traces"]
    index = for_cluster("ALTER TABLE traces ADD INDEX IF NOT EXISTS i x TYPE minmax GRANULARITY 1", CLUSTER)
    assert len(index) == 1 and index[0].startswith("ALTER TABLE traces_local ON CLUSTER 'prod' ADD INDEX")
    drops = for_cluster("DROP TABLE IF EXISTS traces_hourly", CLUSTER)
    assert drops == [
        "DROP TABLE IF EXISTS traces_hourly ON CLUSTER 'prod' SYNC",
        "DROP TABLE IF EXISTS traces_hourly_local ON CLUSTER 'prod' SYNC",
    ]
    with pytest.raises(ValueError, match="cannot rewrite"):
        for_cluster("RENAME TABLE a TO b", CLUSTER)


def test_the_traces_rebuild_swaps_local_tables_sharded_like_traces() -> None:
    rewritten = [d for s in TEXT_INDEX_STATEMENTS for d in for_cluster(s, CLUSTER)]
    copy = next(d for d in rewritten if d.startswith(f"CREATE TABLE IF NOT EXISTS {REBUILT_TABLE} ON"))
    assert copy.endswith("cityHash64(trace_id))")  # the table that becomes traces, sharded as traces is
    assert any("index_granularity_bytes = 1048576" in d and "Replicated" in d for d in rewritten)
    assert f"EXCHANGE TABLES traces_local AND {REBUILT_TABLE}_local ON CLUSTER 'prod'" in rewritten
    insert = next(d for d in rewritten if d.startswith("INSERT"))
    assert "distributed_foreground_insert = 1" in insert  # done before the swap, not forwarded later
    assert rewritten[-1].startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS traces_hourly_mv")


def test_the_setting_switches_migrations_and_mutations() -> None:
    update = "ALTER TABLE traces UPDATE retention_days = 7 WHERE project_id = 1"
    assert statements(update) == [update]  # one server: as written
    with override_settings(CLICKHOUSE_CLUSTER=CLUSTER):
        assert statements(update) == [
            "ALTER TABLE traces_local ON CLUSTER 'prod' UPDATE retention_days = 7 WHERE project_id = 1"
        ]
        assert len(statements(LEDGER)) == 2
