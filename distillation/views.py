"""The distillation pages: the project's jobs, and one job with its estimate, progress (an htmx
fragment polled every two seconds while it runs), loss history (uPlot) and evaluation, with cancel
and approve forms. Project members only (gateway.views.member_of): anyone else gets 404."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from gateway.models import Project
from gateway.views import member_of

from . import services
from .models import DistillationJob


def _job(project: Project, pk: int) -> DistillationJob:
    job = DistillationJob.objects.select_related("dataset_version__dataset").filter(project=project, pk=pk).first()
    if job is None:
        raise Http404("No such distillation job.")
    return job


def _context(project: Project, job: DistillationJob) -> dict[str, Any]:
    history = (job.metrics or {}).get("history") or []
    keys = sorted({k for h in history for k in h if k != "step"})
    series = {"step": [h.get("step", i + 1) for i, h in enumerate(history)]}
    series.update({k: [h.get(k) for h in history] for k in keys if k in ("loss", "kl", "reward", "sft_loss")})
    return {"project": project, "job": job, "series": series, "students": list(job.students.all())}


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
    job = _job(project, pk)
    template = "distillation/_job_progress.html" if getattr(request, "htmx", False) else "distillation/job.html"
    return render(request, template, _context(project, job))


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    try:
        services.job_cancel(job=_job(project, pk))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("distillation_job", slug, pk)


@login_required
@require_POST
def job_approve(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = member_of(request, slug).project
    try:
        student = services.job_approve(job=_job(project, pk), alias=request.POST.get("alias", ""), user=request.user)
        messages.success(request, f"Alias {student.alias} now serves local/{student.name}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("distillation_job", slug, pk)
