"""Runs the numbered ClickHouse migrations in traces/ch_migrations/."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from django.conf import settings

from opentracy_site import clickhouse
from traces import ch_migrations

from .ch_cluster import for_cluster

LEDGER = """
CREATE TABLE IF NOT EXISTS opentracy_migrations (name String, applied_at DateTime DEFAULT now())
ENGINE = MergeTree ORDER BY name
"""


def _names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(ch_migrations.__path__) if m.name.startswith("m"))


def statements(statement: str) -> list[str]:
    """The statement as run here: rewritten for CLICKHOUSE_CLUSTER when one is set (ch_cluster.py)."""
    return for_cluster(statement, settings.CLICKHOUSE_CLUSTER) if settings.CLICKHOUSE_CLUSTER else [statement]


def apply_migrations(starting: Callable[[str], None] | None = None) -> list[str]:
    """Apply pending migrations in order; returns the names applied. `starting` is called with each
    name before it runs (some copy a table: minutes at millions of traces)."""
    for ddl in statements(LEDGER):
        clickhouse.command(ddl)
    _cols, rows = clickhouse.query("SELECT name FROM opentracy_migrations")
    done = {r[0] for r in rows}
    applied = []
    for name in _names():
        if name in done:
            continue
        if starting:
            starting(name)
        module = importlib.import_module(f"traces.ch_migrations.{name}")
        for statement in module.STATEMENTS:
            for ddl in statements(statement):
                clickhouse.command(ddl)
        clickhouse.insert("opentracy_migrations", [[name]], column_names=["name"])
        applied.append(name)
    return applied
