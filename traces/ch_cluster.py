"""The ClickHouse DDL for a cluster (CLICKHOUSE_CLUSTER set): every migration statement rewritten so
each table is replicated on every shard and read and written through a Distributed table.

    CREATE TABLE t (...) ENGINE = XMergeTree(a) ...
      → CREATE TABLE t_local ON CLUSTER c (...)
          ENGINE = ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/t_local', '{replica}', a) ...
      → CREATE TABLE t ON CLUSTER c AS t_local ENGINE = Distributed(c, currentDatabase(), t_local, <key>)
    ALTER TABLE t ADD|DROP|MODIFY COLUMN  → on t_local and on t (the Distributed table mirrors the columns)
    ALTER TABLE t <anything else>         → on t_local only (indexes, TTL, mutations live with the data)
    CREATE MATERIALIZED VIEW v TO r AS SELECT ... FROM t
      → on every node, from t_local into r_local: each shard rolls up its own inserts
    DROP TABLE / DROP VIEW                → ON CLUSTER, both halves
    EXCHANGE TABLES a AND b               → the local halves, ON CLUSTER (each Distributed table keeps
                                            reading its name, which now holds the other's rows)

The engine keeps querying and inserting the plain names (`traces`, `traces_hourly`), which are the
Distributed tables, so no query changes. Rows are sharded by a hash of the table's sort key (the
trace id for traces), so a ReplacingMergeTree's duplicates meet on one shard. The rewrite relies on
the migrations' DDL shape (one statement each, `ENGINE = ...` then `ORDER BY`); tests/test_ch_cluster
checks every existing migration parses after the rewrite.
"""

from __future__ import annotations

import re

LOCAL = "_local"
# Sharding keys where the sort key is not the best one: a trace's row, its annotations and its
# cluster assignments sit on one shard, spread by trace id rather than piled up by project.
# traces_m0008 is the copy m0008 swaps in as traces (traces/ch_sql.py), so it is sharded the same.
SHARD_KEYS = {n: "cityHash64(trace_id)" for n in ("traces", "traces_m0008", "trace_annotations", "cluster_assignments")}

_CREATE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.I | re.S)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(?:\(([^)]*)\))?", re.I)
_ORDER = re.compile(r"ORDER\s+BY\s+(\([^)]*\)|[\w.]+)", re.I)
_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+(.*)$", re.I | re.S)
_VIEW = re.compile(
    r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+TO\s+(\w+)\s+AS\s+(.*)$", re.I | re.S
)
_DROP = re.compile(r"^\s*DROP\s+(TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?(\w+)\s*$", re.I)
_EXCHANGE = re.compile(r"^\s*EXCHANGE\s+TABLES\s+(\w+)\s+AND\s+(\w+)\s*$", re.I)
_FROM = re.compile(r"\bFROM\s+(\w+)\b", re.I)
_COLUMN_CHANGE = re.compile(r"^(ADD|DROP|MODIFY|RENAME)\s+COLUMN\b", re.I)


def _on(cluster: str) -> str:
    return f"ON CLUSTER '{cluster}'"


def _create(statement: str, name: str, cluster: str) -> list[str]:
    engine = _ENGINE.search(statement)
    if engine is None:
        raise ValueError(f"cannot rewrite for a cluster (no MergeTree engine): {statement[:80]}")
    local = name + LOCAL
    args = [f"'/clickhouse/tables/{{shard}}/{{database}}/{local}'", "'{replica}'"]
    if engine.group(2):
        args.append(engine.group(2))
    replicated = f"ENGINE = Replicated{engine.group(1)}({', '.join(args)})"
    head = re.sub(
        r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\s*\(",
        f"CREATE TABLE IF NOT EXISTS {local} {_on(cluster)} (",
        statement,
        count=1,
        flags=re.I,
    )
    order = _ORDER.search(statement)
    key = SHARD_KEYS.get(name) or (f"cityHash64{order.group(1)}" if order and order.group(1).startswith("(") else "")
    key = key or (f"cityHash64({order.group(1)})" if order else "rand()")
    distributed = (
        f"CREATE TABLE IF NOT EXISTS {name} {_on(cluster)} AS {local}"
        f" ENGINE = Distributed('{cluster}', currentDatabase(), '{local}', {key})"
    )
    return [_ENGINE.sub(replicated, head, count=1), distributed]


def for_cluster(statement: str, cluster: str) -> list[str]:
    """The statements that do on `cluster` what `statement` does on one server."""
    if created := _CREATE.match(statement):
        return _create(statement, created.group(1), cluster)
    if altered := _ALTER.match(statement):
        name, rest = altered.groups()
        local = f"ALTER TABLE {name}{LOCAL} {_on(cluster)} {rest}"
        if _COLUMN_CHANGE.match(rest.strip()):
            return [local, f"ALTER TABLE {name} {_on(cluster)} {rest}"]
        return [local]
    if view := _VIEW.match(statement):
        name, target, select = view.groups()
        select = _FROM.sub(lambda m: f"FROM {m.group(1)}{LOCAL}", select)
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {_on(cluster)} TO {target}{LOCAL} AS {select}"]
    if dropped := _DROP.match(statement):
        kind, name = dropped.groups()
        if kind.upper() == "VIEW":
            return [f"DROP VIEW IF EXISTS {name} {_on(cluster)} SYNC"]
        return [f"DROP TABLE IF EXISTS {n} {_on(cluster)} SYNC" for n in (name, name + LOCAL)]
    if exchanged := _EXCHANGE.match(statement):
        a, b = exchanged.groups()
        return [f"EXCHANGE TABLES {a}{LOCAL} AND {b}{LOCAL} {_on(cluster)}"]
    if re.match(r"^\s*INSERT\s+INTO\b", statement, re.I):
        return [statement]  # through the Distributed tables, sharded like any insert
    raise ValueError(f"cannot rewrite for a cluster: {statement.strip()[:80]}")
