"""Reads of distillation for other pages: what the latest approved student changed on the bill."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.internal import INTERNAL_METADATA_KEY
from opentracy_site import clickhouse
from traces.ch_sql import TRACES_TABLE
from traces.filters import TraceFilters, where

from .models import Student


def _window(project_id: int, alias: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The apps' answered requests on `alias` in [since, until) (the engine's own calls, e.g. a
    job's teacher samples, left out), their cost and cost per 1k requests (USD). Unpriced answers
    count as requests but not as cost; they are reported so the figure is not read as exact."""
    clauses, params = where(project_id, TraceFilters(since=since, until=until, alias=alias, status="ok"))
    clauses.append("NOT mapContains(metadata, {internal_key:String})")
    params["internal_key"] = INTERNAL_METADATA_KEY
    _cols, rows = clickhouse.query(
        "SELECT count(), sum(ifNull(cost_total_usd, 0)), countIf(cost_total_usd IS NULL),"  # noqa: S608
        f" groupUniqArray(3)(resolved_model) FROM {TRACES_TABLE} WHERE {' AND '.join(clauses)}",
        params,
    )
    requests, cost, unpriced, models = rows[0] if rows else (0, 0.0, 0, [])
    requests = int(requests)
    return {
        "requests": requests,
        "cost_usd": round(float(cost or 0.0), 6),
        "unpriced": int(unpriced),
        "models": sorted(models),
        "per_1k_usd": round(1000 * float(cost or 0.0) / requests, 6) if requests else None,
    }


def cost_per_1k_around_approval(project_id: int) -> dict[str, Any] | None:
    """Cost per 1k answered requests on the alias of the project's latest approved student, before
    its approval (since the previous approval on that alias, if any) and after it; None when no
    student was approved onto an alias. Computed from the raw traces of that alias."""
    student = Student.objects.filter(project_id=project_id).exclude(alias="").order_by("-created_at", "-id").first()
    if student is None:
        return None
    previous = (
        Student.objects.filter(project_id=project_id, alias=student.alias, created_at__lt=student.created_at)
        .order_by("-created_at", "-id")
        .first()
    )
    approved_at = student.created_at
    before = _window(project_id, student.alias, previous.created_at if previous else None, approved_at)
    after = _window(project_id, student.alias, approved_at, None)
    change = None
    if before["per_1k_usd"] and after["per_1k_usd"] is not None:
        change = round(after["per_1k_usd"] / before["per_1k_usd"] - 1, 4)  # -1.0: the whole cost went
    return {
        "alias": student.alias,
        "student": student.model,
        "replaced": student.replaced_target,
        "approved_at": approved_at,
        "before": before,
        "after": after,
        "change": change,
    }
