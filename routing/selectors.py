"""Reads for the routing API and page: a policy's profile grid, its cost–quality curve over recent
traffic, routed traffic per model over time and the savings against always asking the dearest
candidate. ClickHouse reads are scoped to the policy's project and bound by the driver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db.models import QuerySet
from django.http import Http404

from datasets import embedding_cache, prompts
from distillation.models import Student
from gateway.models import Project
from gateway.providers.local_embed import EMBED_MODEL
from gateway.resolve import parse_target
from gateway.selectors import alias_get
from opentracy_site import clickhouse
from traces.ch_sql import TRACES_TABLE
from traces.filters import TraceFilters, where

from .models import ProfileRun, RoutingPolicy
from .router import BUILTIN_NAME, LAMBDAS, Compiled, builtin_policy, compile_policy, curve, prices

SAMPLE_SIZE = 500  # recent prompts the curve is predicted over
SAMPLE_DAYS = 30  # how far back "recent" reaches
TRAFFIC_HOURS = 7 * 24  # the traffic chart and the savings cover the last week, hourly
DEFAULT_PROMPT_TOKENS = 300.0  # when the project has no traces yet
RECENT_RUNS = 10


def policies(project: Project) -> QuerySet[RoutingPolicy]:
    return RoutingPolicy.objects.filter(project=project)


def policy_get(project: Project, pk: int) -> RoutingPolicy:
    """The project's policy; Http404 otherwise (pages show Django's 404, the API DRF's)."""
    policy = RoutingPolicy.objects.filter(project=project, pk=pk).select_related("clustering_run").first()
    if policy is None:
        raise Http404("No such routing policy.")
    return policy


def profile_run_get(project: Project, pk: int) -> ProfileRun:
    """The project's profile run; Http404 otherwise."""
    run = ProfileRun.objects.filter(policy__project=project, pk=pk).select_related("policy").first()
    if run is None:
        raise Http404("No such profile run.")
    return run


def policy_data(policy: RoutingPolicy) -> dict[str, Any]:
    return {
        "id": policy.pk,
        "name": policy.name,
        "alias_target": f"router/{policy.name}",
        "is_default": policy.is_default,
        "candidates": list(policy.candidates),
        "lam": policy.lam,
        "clustering_run": policy.clustering_run_id,
        "default_model": policy.default_model,
        "max_latency_ms": policy.max_latency_ms,
        "required_capabilities": list(policy.required_capabilities or []),
        "min_context_tokens": policy.min_context_tokens,
        "temperature": policy.temperature,
        "shrinkage": policy.shrinkage,
        "expected_output_tokens": policy.expected_output_tokens,
        "created_at": policy.created_at.isoformat() if policy.created_at else None,
        "updated_at": policy.updated_at.isoformat() if policy.updated_at else None,
    }


def run_data(run: ProfileRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "policy": run.policy_id,
        "status": run.status,
        "progress": run.progress,
        "message": run.message,
        "per_cluster": run.per_cluster,
        "judge": run.judge,
        "estimate": run.estimate,
        "results": run.results,
        "cancel_requested": run.cancel_requested,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


# ---------------------------------------------------------------- the profile


def profile_grid(c: Compiled) -> dict[str, Any]:
    """Rows per cluster with each candidate's cell: Ψ, its evidence, its 95% interval."""
    p = c.profile
    return {
        "models": list(p.models),
        "rows": [
            {
                "key": key,
                "name": c.cluster_names[k],
                "cells": {m: p.cell(k, j) for j, m in enumerate(p.models)},
            }
            for k, key in enumerate(p.cluster_keys)
        ],
        "informed": bool(p.informed.any()),
    }


# ---------------------------------------------------------------- recent traffic and the curve


def recent_sample(policy: RoutingPolicy, c: Compiled) -> tuple[np.ndarray, float, dict[str, Any]]:
    """(prompt vectors, mean prompt tokens, what they are). Vectors of the project's recent prompts
    come from the embedding cache only (a page never embeds 500 prompts); with none cached, the
    policy's cluster centroids stand in for the traffic."""
    since = datetime.now(UTC) - timedelta(days=SAMPLE_DAYS)
    _cols, rows = clickhouse.query(
        f"SELECT request_messages, prompt_tokens FROM {TRACES_TABLE}"  # noqa: S608
        " WHERE project_id = {project_id:UInt64} AND timestamp >= {since:DateTime64(3, 'UTC')}"
        " AND status = 200 AND endpoint != 'embeddings'"
        " ORDER BY timestamp DESC LIMIT {limit:UInt32}",
        {"project_id": policy.project_id, "since": since, "limit": SAMPLE_SIZE},
    )
    tokens = [int(r[1]) for r in rows if r[1]]
    mean_tokens = float(np.mean(tokens)) if tokens else DEFAULT_PROMPT_TOKENS
    # The router embeds the last user message (routing/gateway.py); clustering may have cached the
    # prompt with its system prompt: either vector will do, the router's own text first.
    run = policy.clustering_run
    fields = (run.params or {}).get("prompt_fields") if run is not None else None
    messages = [r[0] for r in rows]
    texts = zip(
        prompts.prompts_for(messages, "last_user")[0],
        prompts.prompts_for(messages, fields or prompts.DEFAULT_PROMPT_FIELDS)[0],
        strict=True,
    )
    choices = [[embedding_cache.content_hash(t) for t in dict.fromkeys(pair) if t] for pair in texts]
    distinct = list(dict.fromkeys(h for pair in choices for h in pair))
    found = embedding_cache.lookup(distinct, EMBED_MODEL) if distinct else {}  # the router's space
    # Repeats kept: the sample is traffic, not distinct prompts.
    vectors = [next(found[h] for h in pair if h in found) for pair in choices if any(h in found for h in pair)]
    info = {"traces": len(rows), "mean_prompt_tokens": round(mean_tokens, 1)}
    if vectors:
        return np.stack(vectors).astype(np.float32), mean_tokens, {**info, "source": "traffic", "prompts": len(vectors)}
    return c.centroids, mean_tokens, {**info, "source": "centroids", "prompts": len(c.centroids)}


def curve_data(policy: RoutingPolicy, c: Compiled) -> dict[str, Any]:
    """The cost–quality curve at the standard λ values and the policy's own, with the current point
    marked and the predicted saving against the dearest candidate."""
    vectors, mean_tokens, sample = recent_sample(policy, c)
    lams = tuple(sorted({*LAMBDAS, float(policy.lam)}))
    drawn = curve(c, vectors, mean_tokens, lams)
    current = next((p for p in drawn["points"] if p["lam"] == float(policy.lam)), None)
    baseline = drawn["baseline"]
    predicted_saving = None
    if current and baseline and baseline["cost_usd"] > 0:
        predicted_saving = round(1 - current["cost_usd"] / baseline["cost_usd"], 4)
    return {**drawn, "lam": float(policy.lam), "current": current, "sample": sample,
            "predicted_saving": predicted_saving}  # fmt: skip


# ---------------------------------------------------------------- routed traffic


# Routed traces carry the policy's name (traces/ch_migrations/m0006_routing.py); the model counted is
# the one that answered, as on the overview.
_ROUTED = (
    "project_id = {project_id:UInt64} AND route_policy = {policy:String} AND timestamp >= {since:DateTime64(3, 'UTC')}"
)
_MODEL = "if(resolved_model != '', resolved_model, requested_model)"


def traffic(policy: RoutingPolicy, hours: int = TRAFFIC_HOURS) -> dict[str, Any]:
    """Requests routed by the policy per hour and answering model, empty hours included."""
    now = datetime.now(UTC)
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    _cols, rows = clickhouse.query(
        f"SELECT toStartOfHour(timestamp) AS hour, {_MODEL} AS model, count() AS requests"  # noqa: S608
        f" FROM {TRACES_TABLE} WHERE {_ROUTED} GROUP BY hour, model ORDER BY hour, model",
        {"project_id": policy.project_id, "policy": policy.name, "since": start},
    )
    found: dict[tuple[datetime, str], int] = {}
    for hour, model, requests in rows:
        found[(hour.replace(tzinfo=UTC) if hour.tzinfo is None else hour, model)] = int(requests)
    models = sorted({m for _h, m in found}, key=lambda m: -sum(v for (_h, mm), v in found.items() if mm == m))
    hours_axis = [start + timedelta(hours=i) for i in range(hours)]
    series = {m: [found.get((h, m), 0) for h in hours_axis] for m in models}
    total = sum(found.values())
    return {
        "bucket": "hour",
        "since": start.isoformat(),
        "t": [int(h.timestamp()) for h in hours_axis],
        "series": series,
        "requests": total,
        "shares": {m: round(sum(v) / total, 4) for m, v in series.items()} if total else {},
    }


def _dearest(c: Compiled, mean_tokens: float) -> int | None:
    cost = (c.in_price * mean_tokens + c.out_price * c.expected_output_tokens) / 1000
    return None if np.isnan(cost).all() else int(np.nanargmax(cost))


def savings(policy: RoutingPolicy, c: Compiled, mean_tokens: float, hours: int = TRAFFIC_HOURS) -> dict[str, Any]:
    """What the routed answers cost against their tokens priced at the dearest candidate. Traces
    without a price are left out of both sides (and counted), so the comparison stays like for like."""
    dearest = _dearest(c, mean_tokens)
    since = datetime.now(UTC) - timedelta(hours=hours)
    _cols, rows = clickhouse.query(
        f"SELECT {_MODEL} AS model, count() AS requests, sum(ifNull(cost_total_usd, 0)) AS cost_usd,"  # noqa: S608
        " countIf(cost_total_usd IS NULL) AS unpriced,"
        " sumIf(prompt_tokens, cost_total_usd IS NOT NULL) AS prompt_tokens,"
        " sumIf(completion_tokens, cost_total_usd IS NOT NULL) AS completion_tokens"
        f" FROM {TRACES_TABLE} WHERE {_ROUTED} AND status = 200 GROUP BY model ORDER BY requests DESC, model",
        {"project_id": policy.project_id, "policy": policy.name, "since": since},
    )
    by_model = [
        {"model": m, "requests": int(n), "cost_usd": round(float(cost), 8), "unpriced": int(unpriced),
         "prompt_tokens": int(pt), "completion_tokens": int(ct)}
        for m, n, cost, unpriced, pt, ct in rows
    ]  # fmt: skip
    actual = sum(r["cost_usd"] for r in by_model)
    out: dict[str, Any] = {
        "since": since.isoformat(),
        "requests": sum(r["requests"] for r in by_model),
        "unpriced": sum(r["unpriced"] for r in by_model),
        "actual_usd": round(actual, 8),
        "dearest_model": c.models[dearest] if dearest is not None else None,
        "dearest_usd": None,
        "saved_usd": None,
        "saved_fraction": None,
        "by_model": by_model,
    }
    if dearest is None:
        out["note"] = "No candidate has a known price: savings cannot be computed."
        return out
    in_price = 0.0 if np.isnan(c.in_price[dearest]) else float(c.in_price[dearest])
    out_price = 0.0 if np.isnan(c.out_price[dearest]) else float(c.out_price[dearest])
    baseline = sum(r["prompt_tokens"] * in_price + r["completion_tokens"] * out_price for r in by_model) / 1000
    out["dearest_usd"] = round(baseline, 8)
    out["saved_usd"] = round(baseline - actual, 8)
    out["saved_fraction"] = round(1 - actual / baseline, 4) if baseline > 0 else None
    return out


# ---------------------------------------------------------------- everything on one page


def policy_detail(policy: RoutingPolicy) -> dict[str, Any]:
    """The policy with its profile grid, curve, traffic, savings and recent profile runs."""
    c = compile_policy(policy)
    drawn = curve_data(policy, c)
    runs = list(policy.profile_runs.all()[:RECENT_RUNS])
    return {
        **policy_data(policy),
        "clusters": {
            "source": "prior" if policy.clustering_run_id is None else "clustering_run",
            "count": len(c.cluster_keys),
        },
        "prices": {
            m: {"input_per_1k": _finite(c.in_price[j]), "output_per_1k": _finite(c.out_price[j])}
            for j, m in enumerate(c.models)
        },
        "profile": profile_grid(c),
        "curve": drawn,
        "traffic": traffic(policy),
        "savings": savings(policy, c, drawn["sample"]["mean_prompt_tokens"]),
        "profile_runs": [run_data(r) for r in runs],
    }


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


# ---------------------------------------------------------------- the overview's "saved" tile


def _teacher_of(student: Any) -> str:
    """The model a student stands in for: what its approval replaced, else its job's teacher, an
    alias followed to its model."""
    for name in (student.replaced_target, student.job.teacher):
        alias = alias_get(project=student.project, name=name) if name else None
        model = alias.target if alias is not None else name
        if model and not model.startswith(("local/", "router/")) and parse_target(model) is not None:
            return model
    return ""


def saved_in_window(project_id: int, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """What routing and distilled students saved over a window, in USD: routed answers against
    their tokens at the policy's dearest candidate's price, and a student's answers (free: they run
    here) against their tokens at its teacher's price. Answers without a price are left out."""
    clauses, params = where(project_id, TraceFilters(since=since, until=until, status="ok"))
    window = " AND ".join(clauses)
    _cols, routed = clickhouse.query(
        "SELECT route_policy, sum(prompt_tokens), sum(completion_tokens), sum(cost_total_usd)"  # noqa: S608
        f" FROM {TRACES_TABLE} WHERE {window} AND route_policy != '' AND cost_total_usd IS NOT NULL"
        " GROUP BY route_policy",
        params,
    )
    routing_usd = 0.0
    for name, pt, ct, cost in routed:
        policy = RoutingPolicy.objects.filter(project_id=project_id, name=name).first()
        if policy is None and name == BUILTIN_NAME:
            policy = builtin_policy(project_id)
        if policy is None:  # deleted since: no candidates to compare with
            continue
        baselines = [(i * pt + o * ct) / 1000 for i, o in (prices(project_id, m) for m in policy.candidates)]
        known = [b for b in baselines if not np.isnan(b)]
        if known:
            routing_usd += max(known) - float(cost)
    _cols, local = clickhouse.query(
        "SELECT resolved_model, sum(prompt_tokens), sum(completion_tokens)"  # noqa: S608
        f" FROM {TRACES_TABLE} WHERE {window} AND route_policy = ''"
        " AND (startsWith(resolved_model, 'local/') OR startsWith(resolved_model, 'vllm/'))"  # students' servings
        " GROUP BY resolved_model",
        params,
    )
    names = [m.split("/", 1)[1] for m, _p, _c in local]
    students = {
        s.model: s
        for s in Student.objects.filter(project_id=project_id, name__in=names).select_related("job", "project")
    }
    distillation_usd = 0.0
    for model, pt, ct in local:
        teacher = _teacher_of(students[model]) if model in students else ""
        if teacher:
            i, o = prices(project_id, teacher)
            if not np.isnan(i) and not np.isnan(o):
                distillation_usd += (i * pt + o * ct) / 1000
    return {
        "routing_usd": round(routing_usd, 6),
        "distillation_usd": round(distillation_usd, 6),
        "total_usd": round(routing_usd + distillation_usd, 6),
        "active": bool(routed or students),
    }
