"""The clusters pages: start a clustering run and follow its progress (an htmx fragment polled every
second while it runs), the clusters of the latest finished run (rename inline, flag worth
distilling, merge, split) and one cluster in detail (representatives, models served, members).

Project members only (gateway.views.member_of): anyone else gets 404, anonymous visitors the login
page. Each form posts to its own URL; under htmx the answer is the fragment to swap, without htmx
a redirect back (or the page with its errors, 400)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from gateway.models import Project
from gateway.views import member_of

from . import cluster_edits, embedder, runs
from .models import Cluster, ClusteringRun
from .selectors import cluster_get, cluster_member_ids, run_get

RANGES = (("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("all", "Any time"))
START_FIELDS = ("range", "model", "alias")
MEMBERS_PAGE = 100


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _project(request: HttpRequest, slug: str) -> Project:
    return member_of(request, slug).project


def _errors(exc: ValidationError) -> dict[str, str]:
    if hasattr(exc, "error_dict"):
        return {field: " ".join(msgs) for field, msgs in exc.message_dict.items()}
    return {"form": " ".join(exc.messages)}


def _page(request: HttpRequest, project: Project, *, form: dict[str, str] | None = None,
          errors: dict[str, str] | None = None, status: int = 200) -> HttpResponse:  # fmt: skip
    latest = ClusteringRun.objects.filter(project=project).first()
    shown = ClusteringRun.objects.filter(project=project, status=ClusteringRun.Status.DONE).first()
    clusters = list(Cluster.objects.filter(run=shown)) if shown else []
    active = [c for c in clusters if c.status == Cluster.Status.ACTIVE]
    context: dict[str, Any] = {
        "project": project,
        "latest": latest,
        "shown": shown,
        "clusters": active,
        "retired": len(clusters) - len(active),
        "ranges": RANGES,
        "embedding_model": embedder.DEFAULT_MODEL,
        "grouping_model": embedder.grouping_name(),
        "grouping_sample": f"{settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE:,}",
        "form": form or {"range": "7d", "model": "", "alias": "", "namer": "namer"},
        "errors": errors or {},
    }
    return render(request, "datasets/clusters.html", context, status=status)


@login_required
@require_GET
def clusters(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, _project(request, slug))


@login_required
@require_POST
def run_start(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    form = {name: request.POST.get(name, "").strip() for name in (*START_FIELDS, "namer")}
    filters = {name: form[name] for name in START_FIELDS if form[name]}
    try:
        runs.run_create(project=project, user=request.user, filters=filters, params={"namer": form["namer"]})
    except ValidationError as exc:
        return _page(request, project, form=form, errors=_errors(exc), status=400)
    return redirect("clusters", slug=project.slug)


def _run(project: Project, pk: int) -> ClusteringRun:
    run = run_get(project=project, pk=pk)
    if run is None:
        raise Http404("No such run.")
    return run


def _cluster(project: Project, pk: int) -> Cluster:
    cluster = cluster_get(project=project, pk=pk)
    if cluster is None:
        raise Http404("No such cluster.")
    return cluster


@login_required
@require_GET
def run_progress(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    """The run's progress fragment. Polled while the run is queued or running; the poll that finds
    it finished reloads the page (HX-Refresh) so the new clusters show."""
    project = _project(request, slug)
    run = _run(project, pk)
    response = render(request, "datasets/_run_progress.html", {"project": project, "run": run})
    if request.htmx and run.finished and request.GET.get("polling"):
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def run_cancel(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project(request, slug)
    run = _run(project, pk)
    try:
        run = runs.run_cancel(run=run)
    except ValidationError as exc:
        messages.warning(request, " ".join(exc.messages))
    if request.htmx:
        return render(request, "datasets/_run_progress.html", {"project": project, "run": run})
    return redirect("clusters", slug=project.slug)


@login_required
@require_POST
def cluster_update(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    """Rename (name, description) or flag (worth_distilling = on / off)."""
    project = _project(request, slug)
    cluster = _cluster(project, pk)
    error = ""
    try:
        if "name" in request.POST:
            name, description = request.POST["name"], request.POST.get("description")
            cluster_edits.cluster_rename(cluster=cluster, name=name, description=description)
        if "worth_distilling" in request.POST:
            cluster_edits.cluster_flag(cluster=cluster, worth_distilling=request.POST["worth_distilling"] == "on")
    except ValidationError as exc:
        error = " ".join(_errors(exc).values())
    if request.htmx:
        context = {"project": project, "c": cluster, "row_error": error}
        return render(request, "datasets/_cluster_row.html", context, status=200)
    if error:
        messages.error(request, error)
    if request.POST.get("next") == "detail":
        return redirect("cluster_detail", slug=project.slug, pk=cluster.pk)
    return redirect("clusters", slug=project.slug)


@login_required
@require_POST
def cluster_merge(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    try:
        into = _cluster(project, int(request.POST.get("into", "")))
        other = _cluster(project, int(request.POST.get("other", "")))
    except ValueError:
        messages.error(request, "Pick two clusters to merge.")
        return redirect("clusters", slug=project.slug)
    try:
        cluster_edits.cluster_merge(into=into, other=other)
        messages.success(request, f"Merged “{other}” into “{into}”.")
    except ValidationError as exc:
        messages.error(request, " ".join(_errors(exc).values()))
    return redirect("clusters", slug=project.slug)


@login_required
@require_POST
def cluster_split(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project(request, slug)
    cluster = _cluster(project, pk)
    try:
        children = cluster_edits.cluster_split(cluster=cluster)
        messages.success(request, f"Split “{cluster}” into {len(children)} clusters.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("clusters", slug=project.slug)


@login_required
@require_GET
def cluster_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project(request, slug)
    cluster = _cluster(project, pk)
    after = request.GET.get("after") or None
    if after is not None:
        try:
            after = str(uuid.UUID(after))
        except ValueError:
            raise Http404("No such page.") from None
    members = cluster_member_ids(cluster=cluster, after=after, limit=MEMBERS_PAGE + 1)
    context = {
        "project": project,
        "c": cluster,
        "members": members[:MEMBERS_PAGE],
        "next_after": members[MEMBERS_PAGE - 1] if len(members) > MEMBERS_PAGE else None,
        "children": list(Cluster.objects.filter(parent=cluster)),
    }
    return render(request, "datasets/cluster_detail.html", context)
