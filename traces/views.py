"""The traces dashboard: a project's overview (KPIs, charts, per-model table), its traces (filters in
the URL, cursor pagination) and one trace in full.

Project members only: anyone else gets 404 (a slug's existence does not leak), anonymous visitors
are sent to the login page."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from gateway.models import Project
from gateway.views import member_of

from . import dashboard
from .filters import RANGES, FilterError, TraceFilters, parse_filters
from .selectors import trace_get, trace_list

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
OVERVIEW_FIELDS = ("range", "since", "until", "model", "alias", "provider", "api_key")
TRACES_DEFAULT_RANGE = "7d"
LIST_FIELDS = (*OVERVIEW_FIELDS, "status", "metadata", "tag", "min_cost", "min_latency_ms", "q")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _project(request: HttpRequest, slug: str) -> Project:
    return member_of(request, slug).project


def _form(
    request: HttpRequest, fields: tuple[str, ...], filters: TraceFilters | None, default_range: str
) -> dict[str, str]:
    """The filter form's values: as the person typed them (so a bad value can be corrected)."""
    values = {name: request.GET.get(name, "") for name in fields}
    if not values["range"]:  # since/until without a range are a custom window
        custom = "custom" if values["since"] or values["until"] else default_range
        values["range"] = filters.period if filters and filters.period else custom
    if "metadata" in values and not values["metadata"] and request.GET.get("metadata_key"):
        key, value = request.GET.get("metadata_key", ""), request.GET.get("metadata_value", "")
        values["metadata"] = f"{key}={value}" if value else key
    return values


def _filters(request: HttpRequest, default_range: str, all_time: bool) -> tuple[TraceFilters | None, dict[str, str]]:
    try:
        return parse_filters(request.GET, default_range=default_range, all_time=all_time), {}
    except FilterError as exc:
        return None, exc.errors


def _common(
    request: HttpRequest, project: Project, fields: tuple[str, ...], default_range: str, all_time: bool = False
) -> dict[str, Any]:
    filters, errors = _filters(request, default_range, all_time)
    return {
        "project": project,
        "filters": filters,
        "errors": errors,
        "form": _form(request, fields, filters, default_range),
        "ranges": list(RANGES),
        "api_keys": dashboard.api_keys(project_id=project.id),
    }


@login_required
@require_GET
def overview(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    context = _common(request, project, OVERVIEW_FIELDS, "24h")
    context["empty"] = not dashboard.has_traces(project_id=project.id)
    if context["empty"]:
        context["base_url"] = request.build_absolute_uri("/v1")
        return render(request, "traces/overview.html", context)
    if context["filters"] is not None:
        try:
            context.update(dashboard.overview(project_id=project.id, filters=context["filters"]))
            query = {k: v for k, v in context["filters"].query_dict().items() if k != "model"}
            context["list_query"] = urlencode(query)
            context["saved_query"] = urlencode(context["filters"].query_dict())
        except ValueError as exc:  # a custom window too long for its buckets
            context["errors"] = {"since": str(exc)}
    return render(request, "traces/overview.html", context, status=400 if context["errors"] else 200)


def _limit(request: HttpRequest) -> int | None:
    try:
        limit = int(request.GET.get("limit") or PAGE_SIZE)
    except ValueError:
        return None
    return limit if 1 <= limit <= MAX_PAGE_SIZE else None


@login_required
@require_GET
def trace_rows(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The traces page; with a cursor under htmx, only the next rows (and the next "Older" link)."""
    project = _project(request, slug)
    # A recent window by default (as the overview's 24h): the first page, and above all a text
    # search, then reads a week of the table instead of all of it (at 10M traces a search over all
    # time took 357-684 ms, over 7 days 122-206 ms). "Any time" is range=all, kept in the links.
    context = _common(request, project, LIST_FIELDS, TRACES_DEFAULT_RANGE, all_time=True)
    filters: TraceFilters | None = context["filters"]
    limit = _limit(request)
    if limit is None:
        context["errors"] = {**context["errors"], "limit": f"Must be an integer between 1 and {MAX_PAGE_SIZE}."}
    if filters is None or limit is None:
        return render(request, "traces/traces.html", context, status=400)
    cursor = request.GET.get("cursor") or None
    try:
        traces, next_cursor = trace_list(project_id=project.id, filters=filters, cursor=cursor, limit=limit)
    except ValueError:
        context["errors"] = {"cursor": "Invalid cursor: start again from the first page."}
        return render(request, "traces/traces.html", context, status=400)
    query = filters.query_dict()
    if limit != PAGE_SIZE:
        query["limit"] = str(limit)
    context.update(
        traces=dashboard.attach_previews(project_id=project.id, traces=traces),
        paged=bool(cursor),
        first_page_url=f"?{urlencode(query)}" if query else "?",
        next_url=f"?{urlencode({**query, 'cursor': next_cursor})}" if next_cursor else "",
        export_query=urlencode({**filters.query_dict(), "project": project.slug}),
        live_query=urlencode(filters.query_dict()),
    )
    if cursor and request.htmx:
        return render(request, "traces/_trace_rows.html", context)
    return render(request, "traces/traces.html", context)


@login_required
@require_GET
def trace_detail(request: HttpRequest, slug: str, trace_id: uuid.UUID) -> HttpResponse:
    project = _project(request, slug)
    trace = trace_get(project_id=project.id, trace_id=trace_id)
    if trace is None:
        raise Http404("No such trace.")
    context = dashboard.trace_page(trace, request.build_absolute_uri("/v1"))
    context["project"] = project
    return render(request, "traces/trace_detail.html", context)
