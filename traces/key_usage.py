"""When each API key of a project was last used, for the settings page.

Read from the hourly rollup (traces_hourly: a few rows per key and hour) rather than the traces
table, so the page stays cheap for a project with millions of traces; the answer is the hour of
the key's latest trace. A ClickHouse failure leaves the column empty instead of failing the page."""

from __future__ import annotations

import logging
from datetime import datetime

from opentracy_site import clickhouse

from .ch_sql import ROLLUP_TABLE

log = logging.getLogger(__name__)


def api_keys_last_used(*, project_id: int) -> dict[int, datetime]:
    sql = (
        f"SELECT api_key_id, max(hour) FROM {ROLLUP_TABLE} "  # noqa: S608 (a constant)
        "WHERE project_id = {project_id:UInt64} AND api_key_id != 0 GROUP BY api_key_id"
    )
    try:
        _cols, rows = clickhouse.query(sql, {"project_id": project_id})
    except Exception as exc:
        log.warning("could not read API key usage (%s)", type(exc).__name__)
        return {}
    return {int(key_id): hour for key_id, hour in rows}
