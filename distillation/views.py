"""The distillation pages: the project's jobs; the create wizard (distillation/wizard.py: four
htmx steps ending in a draft's estimate with Start / Back); and one job with its estimate, progress
(pushed over the progress websocket, an htmx fragment polled every two seconds when the socket is
down), loss history (uPlot) and evaluation, with start, cancel and approve forms. Project members
only (gateway.views.member_of): anyone else gets 404."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from gateway.models import Project
from gateway.views import member_of

from . import selectors, services, wizard
from .models import DistillationJob


def job_or_404(project: Project, pk: int) -> DistillationJob:
    job = DistillationJob.objects.select_related("dataset_version__dataset").filter(project=project, pk=pk).first()
    if job is None:
        raise Http404("No such distillation job.")
    return job


def _context(project: Project, job: DistillationJob) -> dict[str, Any]:
    history = (job.metrics or {}).get("history") or []
    keys = sorted({k for h in history for k in h if k != "step"})
    series = {"step": [h.get("step", i + 1) for i, h in enumerate(history)]}
    series.update({k: [h.get(k) for h in history] for k in keys if k in ("loss", "kl", "reward", "sft_loss")})
    last = history[-1] if history else {}
    return {"project": project, "job": job, "series": series, "last": last, "students": list(job.students.all())}


@login_required
@require_GET
def job_list(request: HttpRequest, slug: str) -> HttpResponse:
    project = member_of(request, slug).project
    jobs = DistillationJob.objects.filter(project=project).select_related("dataset_version__dataset")[:100]
    return render(request, "distillation/jobs.html", {"project": project, "jobs": jobs})


@login_required
@require_GET
def job_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    job = job_or_404(project, pk)
    template = "distillation/_job_progress.html" if getattr(request, "htmx", False) else "distillation/job.html"
    return render(request, template, _context(project, job))


def _wizard(request: HttpRequest, project: Project, step: int, values: dict[str, str], **extra: Any) -> HttpResponse:
    shown = wizard.FIELDS.get(step, ())
    hidden = [(name, value) for name, value in values.items() if name not in shown]  # the other steps' values
    context = {
        "project": project,
        "step": step,
        "values": values,
        "hidden": hidden,
        "defaults": wizard.defaults(),
        "errors": {},
        **wizard.choices(project),
        **extra,
    }
    htmx = getattr(request, "htmx", False)
    template = "distillation/_wizard.html" if htmx else "distillation/new.html"
    status = 400 if context["errors"] and not htmx else 200  # htmx swaps only 2xx answers
    return render(request, template, context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: step 1. POST: `step` (the step submitted) and `nav` (next or back) with every value so far."""
    project = member_of(request, slug).project
    if request.method == "GET":
        return _wizard(request, project, 1, wizard.defaults())
    values = wizard.values_from(request.POST)
    step = int(request.POST["step"]) if request.POST.get("step", "") in ("1", "2", "3", "4") else 1
    if request.POST.get("nav") == "back":
        draft = request.POST.get("draft", "")
        job = DistillationJob.objects.filter(project=project, pk=int(draft)).first() if draft.isdigit() else None
        if job is not None and job.status == DistillationJob.Status.DRAFT:
            services.job_draft_delete(job=job)
        return _wizard(request, project, max(1, step - 1), values)
    if step < 3:
        problem = wizard.check(project, values, through=step)
        if problem is not None:
            return _wizard(request, project, problem[0], values, errors=problem[1])
        return _wizard(request, project, step + 1, values)
    try:
        job = wizard.draft_create(project, values, request.user)
    except ValidationError as exc:
        first = min(wizard.errors_by_step(exc).items())
        return _wizard(request, project, first[0], values, errors=first[1])
    return _wizard(request, project, 4, values, job=job)


@login_required
@require_POST
def job_start(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Queue a draft (the wizard's Start) or resume a failed or cancelled job."""
    project = member_of(request, slug).project
    try:
        services.job_start(job=job_or_404(project, pk))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    target = reverse("distillation_job", args=[slug, pk])
    if getattr(request, "htmx", False):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = target
        return response
    return redirect(target)


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    try:
        services.job_cancel(job=job_or_404(project, pk))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("distillation_job", slug, pk)


@login_required
@require_POST
def job_approve(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    try:
        student = services.job_approve(
            job=job_or_404(project, pk),
            alias=request.POST.get("alias", ""),
            user=request.user,
            serve=request.POST.get("serve") or None,
        )
        messages.success(request, f"Alias {student.alias} now serves {student.model}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except services.ServingFailed as exc:
        messages.error(request, str(exc))
    return redirect("distillation_job", slug, pk)


@login_required
@require_GET
def overview_cost(request: HttpRequest, slug: str) -> HttpResponse:
    """The overview's "cost per 1k requests, before / after the student" tile, loaded after the
    page (htmx) like the savings tile: it reads raw traces of one alias."""
    project = member_of(request, slug).project
    comparison = selectors.cost_per_1k_around_approval(project.id)
    return render(request, "distillation/_cost_tile.html", {"project": project, "cmp": comparison})
