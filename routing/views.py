"""The Routing page: the project's policies with a create form, and one policy with its edit form (λ
as a slider over the cost–quality curve, shown client-side from the curve embedded in the page),
the cluster × model error heat map, the curve and traffic charts (uPlot), savings, and profile runs
(estimate first, then start; progress is an htmx fragment polled while it runs).

Members of the project view and edit; anyone else gets 404. A form with errors is answered 400 with
the page and the messages."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from datasets.models import ClusteringRun
from gateway.models import Project
from gateway.selectors import aliases_for_project
from gateway.views import member_of
from traces.filters import FilterError, parse_filters

from . import profile_runs, selectors, services
from .capabilities import CAPABILITIES
from .models import RoutingPolicy

_SPLIT = re.compile(r"[\s,]+")
_NUMBERS = ("lam", "temperature", "shrinkage", "expected_output_tokens", "max_latency_ms", "min_context_tokens")


def form_data(post: QueryDict) -> dict[str, Any]:
    """The policy fields the form sent, as services take them. Check boxes come with a hidden "0"
    (and the capability list with a hidden ""), so a field the form left out stays unchanged."""
    data: dict[str, Any] = {}
    if "name" in post:
        data["name"] = post.get("name", "")
    if "candidates" in post:
        data["candidates"] = [c for c in _SPLIT.split(post.get("candidates", "")) if c]
    if "is_default" in post:
        data["is_default"] = post.get("is_default") in ("1", "on", "true")
    if "required_capabilities" in post:
        data["required_capabilities"] = [c for c in post.getlist("required_capabilities") if c]
    for field in ("default_model", "clustering_run", *_NUMBERS):
        if field in post:
            data[field] = post.get(field, "").strip()
    return data


def _errors(exc: ValidationError) -> dict[str, list[str]]:
    return exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}


def _form_values(post: QueryDict | None, policy: RoutingPolicy | None) -> dict[str, Any]:
    """What the form shows: what was just sent (after an error), else the saved policy."""
    if post is not None:
        values = _form_values(None, policy)  # a field the form did not send shows its saved value
        sent = ("name", "candidates", "default_model", "clustering_run", *_NUMBERS)
        values.update({k: post.get(k, "") for k in sent if k in post})
        if "is_default" in post:
            values["is_default"] = post.get("is_default") in ("1", "on", "true")
        if "required_capabilities" in post:
            values["required_capabilities"] = post.getlist("required_capabilities")
        return values
    if policy is None:
        return {"lam": "0.1", "candidates": "", "required_capabilities": [], "temperature": "0.05",
                "shrinkage": "8", "expected_output_tokens": "200"}  # fmt: skip
    return {
        "name": policy.name,
        "candidates": "\n".join(policy.candidates),
        "is_default": policy.is_default,
        "default_model": policy.default_model,
        "clustering_run": policy.clustering_run_id or "",
        "required_capabilities": list(policy.required_capabilities or []),
        **{f: "" if getattr(policy, f) is None else getattr(policy, f) for f in _NUMBERS},
    }


def _form_context(project: Project) -> dict[str, Any]:
    runs = ClusteringRun.objects.filter(project=project, status=ClusteringRun.Status.DONE)[:50]
    return {"clustering_runs": runs, "capabilities": CAPABILITIES}


@login_required
@require_http_methods(["GET", "POST"])
def policy_list(request: HttpRequest, slug: str) -> HttpResponse:
    project = member_of(request, slug).project
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            policy = services.policy_create(project=project, user=request.user, data=form_data(request.POST))
        except ValidationError as exc:
            errors = _errors(exc)
        else:
            messages.success(request, f"Policy {policy.name} created.")
            return redirect("routing_policy", slug, policy.pk)
    context = {
        "project": project,
        "policies": selectors.policies(project),
        "errors": errors,
        "values": _form_values(request.POST if errors else None, None),
        **_form_context(project),
    }
    return render(request, "routing/policies.html", context, status=400 if errors else 200)


def _slider(curve: dict[str, Any]) -> list[dict[str, Any]]:
    """The curve's points from "cheapest" (largest λ) to "best" (λ = 0), as the slider's positions."""
    return sorted(curve["points"], key=lambda p: -p["lam"])


@login_required
@require_http_methods(["GET", "POST"])
def policy_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    policy = selectors.policy_get(project, pk)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            policy = services.policy_update(policy=policy, data=form_data(request.POST))
        except ValidationError as exc:
            errors = _errors(exc)
            policy = selectors.policy_get(project, pk)
        else:
            messages.success(request, f"Policy {policy.name} saved (λ = {policy.lam:g}).")
            return redirect("routing_policy", slug, policy.pk)
    detail = selectors.policy_detail(policy)
    positions = _slider(detail["curve"])
    current = next((i for i, p in enumerate(positions) if p["lam"] == policy.lam), 0)
    context = {
        "project": project,
        "policy": policy,
        "detail": detail,
        "errors": errors,
        "values": _form_values(request.POST if errors else None, policy),
        "slider": {"points": positions, "current": current, "max": max(len(positions) - 1, 0)},
        "aliases": [a.name for a in aliases_for_project(project=project)],
        "runs": list(policy.profile_runs.all()[: selectors.RECENT_RUNS]),
        **_form_context(project),
    }
    return render(request, "routing/policy.html", context, status=400 if errors else 200)


@login_required
@require_POST
def policy_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    policy = selectors.policy_get(project, pk)
    try:
        services.policy_delete(policy=policy)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("routing_policy", slug, pk)
    messages.success(request, f"Policy {policy.name} deleted.")
    return redirect("routing", slug)


@login_required
@require_POST
def profile_estimate(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """A draft profile run: its estimate is shown with a Start button."""
    project = member_of(request, slug).project
    policy = selectors.policy_get(project, pk)
    try:
        per_cluster = int(request.POST.get("per_cluster") or 10)
    except ValueError:
        messages.error(request, "Prompts per cluster must be a whole number.")
        return redirect(reverse("routing_policy", args=[slug, pk]) + "#profile-runs")
    try:
        run = profile_runs.profile_run_create(
            policy=policy, user=request.user, per_cluster=per_cluster, judge=request.POST.get("judge", ""), start=False
        )
        messages.info(request, f"Profile run {run.pk}: check the estimate, then start it.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect(reverse("routing_policy", args=[slug, pk]) + "#profile-runs")


@login_required
@require_GET
def run_fragment(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    run = selectors.profile_run_get(project, pk)
    if not getattr(request, "htmx", False):
        return redirect(reverse("routing_policy", args=[slug, run.policy_id]) + "#profile-runs")
    return render(request, "routing/_run.html", {"project": project, "run": run})


@login_required
@require_POST
def run_action(request: HttpRequest, slug: str, pk: int, action: str) -> HttpResponse:
    project = member_of(request, slug).project
    run = selectors.profile_run_get(project, pk)
    act = {"start": profile_runs.profile_run_start, "cancel": profile_runs.profile_run_cancel}.get(action)
    if act is None:
        raise Http404("No such action.")
    try:
        run = act(run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    if getattr(request, "htmx", False):
        return render(request, "routing/_run.html", {"project": project, "run": run})
    return redirect(reverse("routing_policy", args=[slug, run.policy_id]) + "#profile-runs")


@login_required
@require_GET
def overview_saved(request: HttpRequest, slug: str) -> HttpResponse:
    """The overview's "saved by routing/distillation" tile, loaded after the page (htmx): it reads
    raw traces, which the overview's own queries (on the hourly rollup) never do."""
    project = member_of(request, slug).project
    try:
        filters = parse_filters(request.GET, default_range="24h")
    except FilterError:
        filters = None
    saved = selectors.saved_in_window(project.id, filters.since, filters.until) if filters else None
    return render(request, "routing/_saved_tile.html", {"saved": saved})
