"""The canary card of a job page: start a canary from the Approve card; then both sides on live
traffic (an htmx fragment that refreshes itself while the canary runs) with the share, Judge now,
Promote and Stop. Project members only; every form posts back the fragment."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from gateway.models import Project
from gateway.views import member_of

from . import canary, selectors, services, tasks
from .models import Canary, DistillationJob
from .views import job_or_404


def _panel(request: HttpRequest, project: Project, job: DistillationJob, problem: str = "") -> HttpResponse:
    found = job.canaries.select_related("student").first()
    report = selectors.canary_report(found) if found else None
    context = {"project": project, "job": job, "canary": report, "c": found, "problem": problem}
    return render(request, "distillation/_canary.html", context)


def _percent(request: HttpRequest) -> int | str:
    raw = request.POST.get("percent", "")
    return int(raw) if raw.isdigit() else raw  # the service names what is wrong with anything else


@login_required
@require_GET
def canary_panel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    return _panel(request, project, job_or_404(project, pk))


@login_required
@require_POST
def canary_start(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    job = job_or_404(project, pk)
    try:
        canary.canary_start(job=job, alias=request.POST.get("alias", ""), user=request.user,
                            percent=_percent(request), serve=request.POST.get("serve") or None)  # fmt: skip
    except ValidationError as exc:
        return _panel(request, project, job, " ".join(exc.messages))
    except services.ServingFailed as exc:
        return _panel(request, project, job, str(exc))
    return _panel(request, project, job)


@login_required
@require_POST
def canary_action(request: HttpRequest, slug: str, pk: int, action: str) -> HttpResponse:
    """`percent`, `judge`, `promote` or `stop` on the job's latest canary."""
    project = member_of(request, slug).project
    job = job_or_404(project, pk)
    found: Canary | None = job.canaries.select_related("student").first()
    problem = ""
    try:
        if found is None:
            raise ValidationError("This job has no canary.")
        if action == "percent":
            canary.canary_update(canary=found, percent=_percent(request))
        elif action == "judge":
            tasks.canary_judge.delay(found.pk)
        elif action == "promote":
            canary.canary_promote(canary=found, user=request.user)
            page = reverse("distillation_job", args=[slug, pk])  # the whole page changes
            response = HttpResponse(status=204)
            response["HX-Redirect"] = page
            return response if getattr(request, "htmx", False) else redirect(page)
        elif action == "stop":
            problem = "; ".join(canary.canary_stop(canary=found, user=request.user))
        else:
            raise ValidationError(f"Unknown canary action {action!r}.")
    except ValidationError as exc:
        problem = " ".join(exc.messages)
    return _panel(request, project, job, problem)
