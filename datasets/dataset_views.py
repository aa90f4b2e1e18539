"""Dataset pages: the project's datasets (import a JSONL file), creation from clusters (posted by the
clusters page), and the curation page: rows with keep/drop (htmx swaps the row), inline edit with
the revision seen, bulk actions on the current filter, versions and freeze, judge runs with
polled progress, verdict overrides and export links.

Project members only (anyone else gets 404, as on the traces pages); every write goes through
datasets/curation.py or datasets/judge.py."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from gateway.models import Project
from gateway.views import member_of

from .curation import (
    CurationError,
    EditConflict,
    RowFilter,
    VersionFrozen,
    dataset_create_from_clusters,
    dataset_import_jsonl,
    open_version,
    row_edit_response,
    row_set_status,
    rows_bulk_status,
    rows_filtered,
    verdict_override,
    version_counts,
    version_freeze,
    version_get,
)
from .judge import KINDS, judge_run_create, judge_summary
from .models import Cluster, Dataset, DatasetRow, DatasetVersion, JudgeRun, Verdict
from .selectors import dataset_get

PAGE_SIZE = 50
FILTER_FIELDS = ("model", "status", "flagged", "cluster", "q")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _project(request: HttpRequest, slug: str) -> Project:
    return member_of(request, slug).project


def _dataset(project: Project, pk: int) -> Dataset:
    dataset = dataset_get(project=project, pk=pk)
    if dataset is None:
        raise Http404("No such dataset.")
    return dataset


def _row(dataset: Dataset, row_id: int) -> DatasetRow:
    row = (
        DatasetRow.objects.filter(pk=row_id, version__dataset=dataset)
        .select_related("version", "updated_by", "cluster")
        .first()
    )
    if row is None:
        raise Http404("No such row.")
    return row


def _row_context(project: Project, dataset: Dataset, row: DatasetRow, **extra: Any) -> dict[str, Any]:
    return {
        "project": project,
        "dataset": dataset,
        "row": row,
        "editable": not row.version.frozen,
        "verdicts": list(row.verdicts.select_related("overridden_by")),
        **extra,
    }


def _render_row(
    request: HttpRequest, project: Project, dataset: Dataset, row: DatasetRow, **extra: Any
) -> HttpResponse:
    row.refresh_from_db()
    return render(request, "datasets/_row.html", _row_context(project, dataset, row, **extra))


def _back(request: HttpRequest, project: Project, dataset: Dataset) -> HttpResponse:
    query = {k: v for k, v in request.POST.items() if k in (*FILTER_FIELDS, "version") and v}
    url = reverse("dataset_detail", args=[project.slug, dataset.pk])
    return redirect(f"{url}?{urlencode(query)}" if query else url)


# ---------------------------------------------------------------- list, import, create


def _list_page(request: HttpRequest, project: Project, status: int = 200, **extra: Any) -> HttpResponse:
    datasets = []
    for dataset in Dataset.objects.filter(project=project).prefetch_related("clusters"):
        version = open_version(dataset=dataset)
        datasets.append({"dataset": dataset, "version": version, "counts": version_counts(version=version)})
    context = {"project": project, "datasets": datasets, "form": {"name": ""}, **extra}
    return render(request, "datasets/datasets.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def dataset_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The project's datasets; POST imports a JSONL upload (all lines or none)."""
    project = _project(request, slug)
    if request.method != "POST":
        return _list_page(request, project)
    upload = request.FILES.get("file")
    name = request.POST.get("name", "").strip() or (upload.name or "" if upload else "")
    if upload is None:
        return _list_page(request, project, 400, import_error="Choose a JSONL file to import.", form={"name": name})
    try:
        dataset = dataset_import_jsonl(project=project, name=name, file=upload, user=request.user)
    except CurationError as exc:
        return _list_page(request, project, 400, import_error=str(exc), form={"name": name})
    messages.success(request, f"Imported {dataset.name}: {open_version(dataset=dataset).rows.count()} rows.")
    return redirect("dataset_detail", slug=project.slug, pk=dataset.pk)


@login_required
@require_POST
def dataset_create(request: HttpRequest, slug: str) -> HttpResponse:
    """A dataset from clusters: POST `name` and one or more `clusters` (ids), e.g. from the clusters page."""
    project = _project(request, slug)
    ids = request.POST.getlist("clusters")
    name = request.POST.get("name", "").strip()
    try:
        cluster_ids = [int(i) for i in ids]
    except ValueError:
        return _list_page(request, project, 400, create_error="Cluster ids must be numbers.")
    if not name and cluster_ids:
        first = Cluster.objects.filter(project=project, pk=cluster_ids[0]).first()
        name = f"{first} dataset" if first else ""
    try:
        dataset = dataset_create_from_clusters(project=project, name=name, clusters=cluster_ids, user=request.user)
    except CurationError as exc:
        return _list_page(request, project, 400, create_error=str(exc))
    messages.success(request, f"Created {dataset.name}: {open_version(dataset=dataset).rows.count()} rows to curate.")
    return redirect("dataset_detail", slug=project.slug, pk=dataset.pk)


# ---------------------------------------------------------------- the curation page


@login_required
@require_GET
def dataset_detail(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    raw_version = request.GET.get("version") or ""
    version = version_get(dataset=dataset, number=int(raw_version) if raw_version.isdigit() else None)
    if version is None:
        raise Http404("No such version.")
    form = {name: request.GET.get(name, "") for name in FILTER_FIELDS}
    errors = ""
    try:
        row_filter = RowFilter.from_query(request.GET)
    except CurationError as exc:
        row_filter, errors = RowFilter(), str(exc)
    after = request.GET.get("cursor") or "0"
    rows_qs = rows_filtered(version=version, filter=row_filter)
    page = list(
        rows_qs.filter(pk__gt=int(after) if after.isdigit() else 0)
        .select_related("version", "updated_by", "cluster")
        .prefetch_related("verdicts__overridden_by")[: PAGE_SIZE + 1]
    )
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    query = {**row_filter.query_dict()}
    if raw_version:
        query["version"] = str(version.number)
    context = {
        "project": project,
        "dataset": dataset,
        "version": version,
        "versions": list(dataset.versions.order_by("-number")),
        "editable": not version.frozen,
        "counts": version_counts(version=version),
        "matching": rows_qs.count(),
        "rows": [{"row": r, "verdicts": list(r.verdicts.all())} for r in page],
        "form": form,
        "errors": errors,
        "filter_query": urlencode(row_filter.query_dict()),
        "hidden_filter": query,
        "next_url": f"?{urlencode({**query, 'cursor': page[-1].pk})}" if more else "",
        "paged": after not in ("", "0"),
        "models": list(version.rows.order_by("model").values_list("model", flat=True).distinct()),
        "clusters": list(dataset.clusters.all()),
        "judge_runs": list(JudgeRun.objects.filter(version__dataset=dataset).select_related("version")[:5]),
        "kinds": KINDS,
        "export_query": urlencode({"project": project.slug, "version": version.number}),
    }
    if request.htmx and context["paged"]:
        return render(request, "datasets/_dataset_rows.html", context)
    return render(request, "datasets/dataset.html", context, status=400 if errors else 200)


@login_required
@require_POST
def row_status(request: HtmxHttpRequest, slug: str, pk: int, row_id: int) -> HttpResponse:
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    row = _row(dataset, row_id)
    error = ""
    try:
        row_set_status(row=row, status=request.POST.get("status", ""), user=request.user)
    except CurationError as exc:
        error = str(exc)
    if request.htmx:  # the row, and the counter out of band
        counts = version_counts(version=row.version)
        return _render_row(request, project, dataset, row, error=error, oob_counts=counts)
    if error:
        messages.error(request, error)
    return _back(request, project, dataset)


@login_required
@require_http_methods(["GET", "POST"])
def row_edit(request: HtmxHttpRequest, slug: str, pk: int, row_id: int) -> HttpResponse:
    """GET: the inline editor (with the revision seen). POST: save; a stale revision shows who
    changed the row, with their text, and the person's own text kept in the editor."""
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    row = _row(dataset, row_id)
    if request.method != "POST":
        if request.GET.get("cancel"):
            return _render_row(request, project, dataset, row)
        return render(request, "datasets/_row_edit.html", _row_context(project, dataset, row, text=row.target))
    text = request.POST.get("text", "")
    try:
        revision = int(request.POST.get("revision", ""))
    except ValueError:
        revision = -1
    try:
        row_edit_response(row=row, text=text, user=request.user, revision=revision)
    except (EditConflict, VersionFrozen, CurationError) as exc:
        row.refresh_from_db()
        context = _row_context(project, dataset, row, text=text, conflict=str(exc))
        status = 409 if not request.htmx else 200  # htmx swaps 2xx only: the message must show
        return render(request, "datasets/_row_edit.html", context, status=status)
    if request.htmx:
        return _render_row(request, project, dataset, row)
    return _back(request, project, dataset)


@login_required
@require_POST
def rows_bulk(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Set the status of every row matching the page's filter (on the open version)."""
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    try:
        row_filter = RowFilter.from_query(request.POST)
        n = rows_bulk_status(
            version=open_version(dataset=dataset),
            filter=row_filter,
            status=request.POST.get("bulk_status", ""),
            user=request.user,
        )
    except CurationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Set {n} rows to {request.POST.get('bulk_status')}.")
    return _back(request, project, dataset)


@login_required
@require_POST
def freeze(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    version = open_version(dataset=dataset)
    try:
        nxt = version_freeze(version=version, user=request.user, note=request.POST.get("note", ""))
    except CurationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Froze version {version.number}; version {nxt.number} is open for edits.")
    return redirect("dataset_detail", slug=project.slug, pk=dataset.pk)


def _judge_options(post: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("model", "pattern", "rubric"):
        if post.get(name):
            options[name] = post[name]
    if post.get("threshold"):
        options["threshold"] = post["threshold"]
    if post.get("schema"):
        try:
            options["schema"] = json.loads(post["schema"])
        except json.JSONDecodeError as exc:
            raise CurationError(f"The schema is not valid JSON: {exc}") from exc
    return options


def _judge_context(project: Project, dataset: Dataset, run: JudgeRun, **extra: Any) -> dict[str, Any]:
    return {"project": project, "dataset": dataset, "run": run, "summary": judge_summary(run=run), **extra}


@login_required
@require_POST
def judge_start(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    raw_version = request.POST.get("version") or ""
    version: DatasetVersion | None = version_get(
        dataset=dataset, number=int(raw_version) if raw_version.isdigit() else None
    )
    if version is None:
        raise Http404("No such version.")
    try:
        run = judge_run_create(
            version=version,
            kind=request.POST.get("kind", ""),
            alias=request.POST.get("alias", "").strip(),
            options=_judge_options(request.POST),
            user=request.user,
        )
    except CurationError as exc:
        if request.htmx:
            return render(request, "datasets/_dataset_judge.html", {"project": project, "error": str(exc)})
        messages.error(request, str(exc))
        return redirect("dataset_detail", slug=project.slug, pk=dataset.pk)
    if request.htmx:
        return render(request, "datasets/_dataset_judge.html", _judge_context(project, dataset, run))
    messages.success(request, f"Judge run {run.pk} started.")
    return redirect("dataset_detail", slug=project.slug, pk=dataset.pk)


@login_required
@require_GET
def judge_progress(request: HttpRequest, slug: str, pk: int, run_id: int) -> HttpResponse:
    """The run's progress fragment (polled by htmx until it finishes)."""
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    run = JudgeRun.objects.filter(pk=run_id, version__dataset=dataset).select_related("version").first()
    if run is None:
        raise Http404("No such judge run.")
    return render(request, "datasets/_dataset_judge.html", _judge_context(project, dataset, run))


@login_required
@require_POST
def verdict_override_view(request: HtmxHttpRequest, slug: str, pk: int, verdict_id: int) -> HttpResponse:
    project = _project(request, slug)
    dataset = _dataset(project, pk)
    verdict = Verdict.objects.filter(pk=verdict_id, row__version__dataset=dataset).select_related("row").first()
    if verdict is None:
        raise Http404("No such verdict.")
    choice = request.POST.get("passed", "")
    passed = {"true": True, "false": False}.get(choice)
    error = ""
    try:
        verdict_override(verdict=verdict, passed=passed, reason=request.POST.get("reason", ""), user=request.user)
    except CurationError as exc:
        error = str(exc)
    if request.htmx:
        return _render_row(request, project, dataset, _row(dataset, verdict.row_id), error=error)
    if error:
        messages.error(request, error)
    return _back(request, project, dataset)
