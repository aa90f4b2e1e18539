"""Reads of distillation: what the latest approved student changed on the bill, and how a canary's
two sides compare on live traffic."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.internal import INTERNAL_METADATA_KEY
from opentracy_site import clickhouse
from traces.ch_sql import TRACES_TABLE
from traces.filters import TraceFilters, where

from .models import Canary, CanaryVerdict, Student


def _apps_where(project_id: int, filters: TraceFilters) -> tuple[list[str], dict[str, Any]]:
    """traces.filters.where, less the engine's own calls (judges, teachers, canary references)."""
    clauses, params = where(project_id, filters)
    clauses.append("NOT mapContains(metadata, {internal_key:String})")
    params["internal_key"] = INTERNAL_METADATA_KEY
    return clauses, params


def _window(project_id: int, alias: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The apps' answered requests on `alias` in [since, until) (the engine's own calls, e.g. a
    job's teacher samples, left out), their cost and cost per 1k requests (USD). Unpriced answers
    count as requests but not as cost; they are reported so the figure is not read as exact."""
    clauses, params = _apps_where(project_id, TraceFilters(since=since, until=until, alias=alias, status="ok"))
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
    approved = Student.objects.filter(project_id=project_id, approved_at__isnull=False).exclude(alias="")
    student = approved.order_by("-approved_at", "-id").first()
    if student is None or student.approved_at is None:
        return None
    earlier = approved.filter(alias=student.alias, approved_at__lt=student.approved_at)
    previous = earlier.order_by("-approved_at", "-id").first()
    approved_at = student.approved_at
    canary = Canary.objects.filter(student=student).first()  # its traffic was mixed: neither before nor after
    before_until = canary.started_at if canary else approved_at
    before = _window(project_id, student.alias, previous.approved_at if previous else None, before_until)
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


# ---------------------------------------------------------------- canaries

_SIDE = "if(resolved_model = {student:String}, 'student', 'incumbent')"  # a fallback answer is the incumbent's


def _canary_where(canary: Canary) -> tuple[list[str], dict[str, Any]]:
    """The apps' requests on the canary's alias while it ran (the engine's own calls left out)."""
    filters = TraceFilters(since=canary.started_at, until=canary.ended_at, alias=canary.alias)
    clauses, params = _apps_where(canary.project_id, filters)
    params["student"] = canary.student.model
    return clauses, params


def canary_unjudged(canary: Canary, side: str, limit: int) -> list[dict[str, Any]]:
    """Answered requests of one side with no verdict yet, newest first."""
    clauses, params = _canary_where(canary)
    judged = [str(t) for t in CanaryVerdict.objects.filter(canary=canary).values_list("trace_id", flat=True)]
    clauses += ["status = 200", f"{_SIDE} = {{side:String}}", "trace_id NOT IN {judged:Array(UUID)}"]
    params.update(side=side, judged=judged, limit=limit)
    columns, rows = clickhouse.query(
        f"SELECT trace_id, request_messages, response_message FROM {TRACES_TABLE} "  # noqa: S608
        f"WHERE {' AND '.join(clauses)} ORDER BY timestamp DESC LIMIT {{limit:UInt32}}",
        params,
    )
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _empty_side() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "error_rate": None, "cost_usd": 0.0, "unpriced": 0, "per_1k_usd": None,
            "p50_latency_ms": None, "p95_latency_ms": None}  # fmt: skip


def canary_report(canary: Canary) -> dict[str, Any]:
    """Both sides of a canary on live traffic: requests, error rate, cost per 1k answered requests,
    latency (from the traces), and the judge's verdicts (pass rate, mean score, unjudged)."""
    clauses, params = _canary_where(canary)
    _cols, rows = clickhouse.query(
        f"SELECT {_SIDE} AS side, count(), countIf(status != 200),"  # noqa: S608
        " sumIf(ifNull(cost_total_usd, 0), status = 200), countIf(status = 200 AND cost_total_usd IS NULL),"
        " quantileIf(0.5)(latency_ms, status = 200), quantileIf(0.95)(latency_ms, status = 200)"
        f" FROM {TRACES_TABLE} WHERE {' AND '.join(clauses)} GROUP BY side",
        params,
    )
    sides = {side: _empty_side() for side in Canary.Side.values}
    for side, requests, errors, cost, unpriced, p50, p95 in rows:
        answered = int(requests) - int(errors)
        sides[side].update(
            requests=int(requests),
            errors=int(errors),
            error_rate=round(int(errors) / int(requests), 4) if requests else None,
            cost_usd=round(float(cost), 6),
            unpriced=int(unpriced),
            per_1k_usd=round(1000 * float(cost) / answered, 6) if answered > int(unpriced) else None,  # none priced: —
            p50_latency_ms=round(float(p50), 1) if answered else None,
            p95_latency_ms=round(float(p95), 1) if answered else None,
        )
    for side, values in sides.items():
        verdicts = list(CanaryVerdict.objects.filter(canary=canary, side=side).values_list("passed", "score", "error"))
        judged = [(passed, score) for passed, score, error in verdicts if not error]
        scores = [score for _passed, score in judged if score is not None]
        values["judge"] = {
            "judged": len(judged),
            "unjudged": len(verdicts) - len(judged),
            "pass_rate": round(sum(1 for passed, _ in judged if passed) / len(judged), 4) if judged else None,
            "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
        }
    return {
        "id": canary.pk,
        "alias": canary.alias,
        "student": canary.student.model,
        "incumbent": canary.incumbent,
        "percent": canary.percent,
        "status": canary.status,
        "judge": canary.job.judge_kind,
        "reference_judge": canary.job.judge_kind == "exact",  # the incumbent is the reference: no verdicts of its own
        "started_at": canary.started_at.isoformat(),
        "ended_at": canary.ended_at.isoformat() if canary.ended_at else None,
        "judged_at": canary.judged_at.isoformat() if canary.judged_at else None,
        "judge_message": canary.judge_message,
        "sides": sides,
    }
