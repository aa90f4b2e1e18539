"""The dashboard: projects, and per project its provider credentials and target cooldowns.

Every project page is for the project's members only (anyone else gets 404, so a slug's existence
does not leak); owners change credentials, members view and test them (403 on a change).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from . import selectors, services
from .connection import ConnectionResult
from .forms import ProviderCredentialForm, options_text
from .models import Membership, Project, ProviderCredential


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = selectors.projects_for_user(request.user)
    base_url = request.build_absolute_uri("/v1")
    return render(request, "gateway/home.html", {"projects": projects, "base_url": base_url})


# ---------------------------------------------------------------- access


def member_of(request: HttpRequest, slug: str) -> Membership:
    membership = selectors.membership_for(user=request.user, slug=slug)
    if membership is None:
        raise Http404("No such project.")
    return membership


def owner_of(request: HttpRequest, slug: str, what: str = "its provider credentials") -> Membership:
    membership = member_of(request, slug)
    if membership.role != Membership.Role.OWNER:
        raise PermissionDenied(f"Only the project's owners can change {what}.")
    return membership


def _credential(project: Project, pk: int) -> ProviderCredential:
    credential = selectors.credential_get(project=project, pk=pk)
    if credential is None:
        raise Http404("No such credential.")
    return credential


# ---------------------------------------------------------------- pages


def _page(
    request: HttpRequest,
    membership: Membership,
    *,
    form: ProviderCredentialForm | None = None,
    editing: ProviderCredential | None = None,
    results: dict[int, ConnectionResult] | None = None,
    status: int = 200,
) -> HttpResponse:
    project = membership.project
    can_edit = membership.role == Membership.Role.OWNER
    if form is None and can_edit:
        form = ProviderCredentialForm(instance=editing, project=project)
    rows = [
        {"cred": c, "options": options_text(c.options), "result": (results or {}).get(c.pk)}
        for c in selectors.credentials_for_project(project=project)
    ]
    context: dict[str, Any] = {
        "project": project,
        "can_edit": can_edit,
        "rows": rows,
        "form": form,
        "editing": editing,
        "cooldowns": selectors.target_cooldowns(project=project),
    }
    return render(request, "gateway/providers.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def providers(request: HttpRequest, slug: str) -> HttpResponse:
    """The project's credentials; POST adds one (owners)."""
    if request.method != "POST":
        return _page(request, member_of(request, slug))
    membership = owner_of(request, slug)
    project = membership.project
    form = ProviderCredentialForm(request.POST, project=project)
    if not form.is_valid():
        return _page(request, membership, form=form, status=400)
    data = form.cleaned_data
    cred = services.credential_set(
        project=project,
        provider=data["provider"],
        api_key=data["api_key"],
        base_url=data["base_url"],
        options=data["options"],
        label=data["label"],
        weight=data["weight"],
    )
    messages.success(request, f"Saved the {cred.provider}:{cred.label} credential.")
    return redirect("credentials", slug=project.slug)


@login_required
@require_http_methods(["GET", "POST"])
def credential_edit(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    """The edit form (a fragment for htmx); POST saves it (owners). An empty key keeps the stored one."""
    membership = owner_of(request, slug)
    project = membership.project
    cred = _credential(project, pk)
    if request.method != "POST":
        form = ProviderCredentialForm(instance=cred, project=project)
        if request.htmx:
            return render(request, "gateway/_credential_form.html", {"form": form, "editing": cred, "project": project})
        return _page(request, membership, form=form, editing=cred)
    form = ProviderCredentialForm(request.POST, instance=cred, project=project)
    if not form.is_valid():
        cred.refresh_from_db()  # the form wrote its cleaned values onto the instance
        return _page(request, membership, form=form, editing=cred, status=400)
    data = form.cleaned_data
    services.credential_update(
        credential=cred,
        provider=data["provider"],
        label=data["label"],
        base_url=data["base_url"],
        options=data["options"],
        weight=data["weight"],
        api_key=data["api_key"],
    )
    messages.success(request, f"Saved the {cred.provider}:{cred.label} credential.")
    return redirect("credentials", slug=project.slug)


@login_required
@require_POST
def credential_delete(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    project = owner_of(request, slug).project
    cred = _credential(project, pk)
    name = f"{cred.provider}:{cred.label}"
    services.credential_delete(credential=cred)
    if request.htmx:
        return HttpResponse("")  # htmx swaps the credential's rows out
    messages.success(request, f"Deleted the {name} credential.")
    return redirect("credentials", slug=project.slug)


@login_required
@require_POST
def credential_test(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    """One real, read-only call to the provider with the stored credential (members and owners)."""
    membership = member_of(request, slug)
    cred = _credential(membership.project, pk)
    result = services.credential_test(credential=cred)
    if request.htmx:
        return render(request, "gateway/_connection_result.html", {"result": result})
    return _page(request, membership, results={cred.pk: result})


@login_required
@require_GET
def cooldowns(request: HttpRequest, slug: str) -> HttpResponse:
    """The cooldowns fragment, polled by the providers page."""
    project = member_of(request, slug).project
    context = {"project": project, "cooldowns": selectors.target_cooldowns(project=project)}
    return render(request, "gateway/_cooldowns.html", context)
