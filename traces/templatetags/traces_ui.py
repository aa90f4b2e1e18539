"""Formatting filters for the traces pages, and the header's project switcher and nav."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template
from django.urls import reverse

from gateway.selectors import projects_for_user

register = template.Library()

# The page kind each URL name belongs to, and the URL name a switch to another project opens.
_KINDS = {
    "traces_overview": "traces_overview",
    "traces_list": "traces_list",
    "trace_detail": "traces_list",  # a trace belongs to one project: the other's list
    "credentials": "credentials",
    "credential_edit": "credentials",
    "project_settings": "project_settings",
    "clusters": "clusters",
    "cluster_detail": "clusters",  # a cluster belongs to one project: the other's clusters
    "datasets_list": "datasets_list",
    "dataset_detail": "datasets_list",  # a dataset belongs to one project: the other's list
    "distillation_jobs": "distillation_jobs",
    "distillation_job": "distillation_jobs",  # a job belongs to one project: the other's list
    "routing": "routing",
    "routing_policy": "routing",  # a policy belongs to one project: the other's list
}


@register.filter
def iso_dt(value: Any) -> datetime | None:
    """An ISO 8601 string (as trace_list gives timestamps) as an aware datetime."""
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@register.filter
def usd(value: Any) -> str:
    if value is None or value == "":
        return "—"
    amount = float(value)
    if amount == 0:
        return "$0.00"
    return f"${amount:,.2f}" if amount >= 100 else f"${amount:,.6f}".rstrip("0").rstrip(".")


@register.filter
def ms(value: Any) -> str:
    if value is None or value == "":
        return "—"
    amount = float(value)
    return (
        f"{amount / 1000:,.2f} s" if amount >= 10_000 else f"{amount:,.0f} ms" if amount >= 10 else f"{amount:.1f} ms"
    )


@register.filter
def pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


@register.filter
def num(value: Any) -> str:
    """An integer with thousands separators; "—" for a missing value ('' from a template lookup
    of a field an object lacks, e.g. an estimate that was never made)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


@register.inclusion_tag("traces/_project_nav.html", takes_context=True)
def project_nav(context: template.Context) -> dict[str, Any]:
    """The user's projects (switching keeps the page kind) and the current project's pages."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or user is None or not user.is_authenticated:
        return {"projects": []}
    match = request.resolver_match
    slug = match.kwargs.get("slug", "") if match else ""
    kind = _KINDS.get(match.url_name or "", "traces_overview") if match else "traces_overview"
    projects = list(projects_for_user(user))
    current = next((p for p in projects if p.slug == slug), None)
    here = current or (projects[0] if len(projects) == 1 else None)
    return {
        "projects": [
            {"name": p.name, "slug": p.slug, "url": reverse(kind, args=[p.slug]), "current": p == current}
            for p in projects
        ],
        "current": current,
        "nav": [
            ("Overview", reverse("traces_overview", args=[here.slug]), kind == "traces_overview" and bool(current)),
            ("Traces", reverse("traces_list", args=[here.slug]), kind == "traces_list" and bool(current)),
            ("Clusters", reverse("clusters", args=[here.slug]), kind == "clusters" and bool(current)),
            ("Datasets", reverse("datasets_list", args=[here.slug]), kind == "datasets_list" and bool(current)),
            (
                "Distillation",
                reverse("distillation_jobs", args=[here.slug]),
                kind == "distillation_jobs" and bool(current),
            ),
            ("Routing", reverse("routing", args=[here.slug]), kind == "routing" and bool(current)),
            ("Providers", reverse("credentials", args=[here.slug]), kind == "credentials" and bool(current)),
            ("Settings", reverse("project_settings", args=[here.slug]), kind == "project_settings" and bool(current)),
        ]
        if here
        else [],
    }


@register.filter
def get(mapping: Any, key: str) -> Any:
    """mapping[key], or "" (form values and field errors by name)."""
    return mapping.get(key, "") if hasattr(mapping, "get") else ""
