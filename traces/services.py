"""Writes of traces. New traces go through the trace writer (batched, spooled to disk when
ClickHouse is down), never straight to ClickHouse; annotations and retention changes are rare,
person-driven writes that go straight to it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError

from gateway.models import Project
from opentracy_site import clickhouse

from .ch_sql import (
    ANNOTATION_COLUMNS,
    ANNOTATIONS_TABLE,
    DAILY_TABLE,
    MAX_RETENTION_DAYS,
    ROLLUP_TABLE,
    TRACES_TABLE,
)
from .migrations_ch import statements
from .writer import get_writer


def trace_ingest(*, project: Project, items: list[dict[str, Any]], api_key_id: int = 0) -> list[str]:
    """Record traces produced elsewhere (records from traces.ingest.parse_body, all valid) in
    `project`, attributed to the API key that sent them (0 for a logged-in person), kept for the
    project's retention as gateway traces are. The project is always the caller's: any project in
    the records is overwritten. Returns the new trace ids, in order."""
    writer = get_writer()
    trace_ids = []
    for item in items:
        trace_id = str(uuid.uuid4())
        writer.submit(
            {
                **item,
                "trace_id": trace_id,
                "project_id": project.id,
                "api_key_id": api_key_id,
                "retention_days": project.retention_days,
            }
        )
        trace_ids.append(trace_id)
    return trace_ids


def annotation_add(
    *,
    project_id: int,
    trace_id: uuid.UUID,
    user_id: int,
    tags_add: list[str] | None = None,
    tags_remove: list[str] | None = None,
    score: float | None = None,
    comment: str = "",
) -> None:
    """Tags and feedback on a trace, appended to the annotations table (traces are never updated in
    place); reads apply them in order, so the latest feedback wins and history is kept."""
    now = datetime.now(UTC)
    rows: list[list[Any]] = [[project_id, trace_id, now, user_id, "tag", t, None, ""] for t in tags_add or ()]
    rows += [[project_id, trace_id, now, user_id, "untag", t, None, ""] for t in tags_remove or ()]
    if score is not None or comment:
        rows.append([project_id, trace_id, now, user_id, "feedback", "", score, comment])
    if rows:
        clickhouse.insert(ANNOTATIONS_TABLE, rows, ANNOTATION_COLUMNS)


def retention_set(*, project: Project, days: int) -> None:
    """Keep `project`'s traces `days` days: new rows carry it from the key cache, stored rows and the
    rollups get it by a mutation (rare, admin-driven; ClickHouse drops expired rows at merge time)."""
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValidationError(f"Retention must be between 1 and {MAX_RETENTION_DAYS} days.")
    project.retention_days = days
    project.save(update_fields=["retention_days"])  # the key cache drops the old value on save
    for table in (TRACES_TABLE, ROLLUP_TABLE, DAILY_TABLE):
        update = f"ALTER TABLE {table} UPDATE retention_days = {{days:UInt16}} WHERE project_id = {{project_id:UInt64}}"
        for statement in statements(update):  # on a cluster: the replicated local tables
            clickhouse.command(statement, {"days": days, "project_id": project.id})
