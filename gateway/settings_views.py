"""The project settings page: API keys, provider credentials (a link), aliases, members, trace
retention.

Members and owners see it; only owners change anything (403 for a member's write, as on the
providers page); anyone else gets 404, so a slug's existence does not leak. Each section is its
own htmx fragment: a form posts to its section's URL and htmx swaps the section (with the form's
errors, answered 200 because htmx does not swap error responses). Without htmx the same URLs
answer the whole page (400 with the errors) or redirect back after a change.

A new API key's raw value is rendered in the response to its creation only (never stored, never
put in the session, `Cache-Control: no-store`); reloading the page shows its prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from traces import key_usage
from traces import services as trace_services

from . import selectors, services, views
from .models import Membership
from .settings_forms import AliasForm, AliasRollbackForm, ApiKeyCreateForm, MemberAddForm, RetentionForm


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _owner(request: HttpRequest, slug: str) -> Membership:
    return views.owner_of(request, slug, "its settings")


def _actor(request: HttpRequest) -> str:
    return str(request.user.get_username())


# ---------------------------------------------------------------- section contexts


def _keys(membership: Membership, **extra: Any) -> dict[str, Any]:
    project = membership.project
    last_used = key_usage.api_keys_last_used(project_id=project.id)
    keys = [{"key": k, "last_used": last_used.get(k.pk)} for k in selectors.api_keys_for_project(project=project)]
    return {"keys": keys, "key_form": extra.pop("key_form", None) or ApiKeyCreateForm(), **extra}


def _aliases(membership: Membership, **extra: Any) -> dict[str, Any]:
    project = membership.project
    histories = selectors.alias_histories(project=project)
    current = list(selectors.aliases_for_project(project=project))
    aliases = [{"alias": a, "history": histories.get(a.name, [])} for a in current]
    live = {a.name for a in current}
    removed = [{"name": name, "history": changes} for name, changes in sorted(histories.items()) if name not in live]
    return {
        "aliases": aliases,
        "removed_aliases": removed,
        "alias_form": extra.pop("alias_form", None) or AliasForm(),
        **extra,
    }


def _members(membership: Membership, **extra: Any) -> dict[str, Any]:
    members = selectors.members_for_project(project=membership.project)
    return {"members": members, "member_form": extra.pop("member_form", None) or MemberAddForm(), **extra}


def _retention(membership: Membership, **extra: Any) -> dict[str, Any]:
    form = extra.pop("retention_form", None) or RetentionForm(initial={"days": membership.project.retention_days})
    return {"retention_form": form, **extra}


SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "keys": _keys,
    "aliases": _aliases,
    "members": _members,
    "retention": _retention,
}


def _base(request: HttpRequest, membership: Membership) -> dict[str, Any]:
    return {
        "project": membership.project,
        "me": membership,
        "can_edit": membership.role == Membership.Role.OWNER,
    }


def _render(
    request: HtmxHttpRequest, membership: Membership, section: str, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The section's fragment for htmx (200, errors included), else the whole page."""
    context = _base(request, membership)
    if request.htmx:
        context.update(SECTIONS[section](membership, **extra))
        return render(request, f"gateway/_settings_{section}.html", context)
    for name, build in SECTIONS.items():
        context.update(build(membership, **(extra if name == section else {})))
    return render(request, "gateway/settings.html", context, status=status)


def _done(request: HtmxHttpRequest, membership: Membership, section: str, message: str) -> HttpResponse:
    if request.htmx:
        return _render(request, membership, section, notice=message)
    messages.success(request, message)
    return redirect(f"/projects/{membership.project.slug}/settings#{section}")


def _form_error(form: Form, exc: ValidationError) -> None:
    for error in exc.messages:
        form.add_error(None, error)


# ---------------------------------------------------------------- views


@login_required
@require_GET
def settings_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = views.member_of(request, slug)
    context = _base(request, membership)
    for build in SECTIONS.values():
        context.update(build(membership))
    return render(request, "gateway/settings.html", context)


@login_required
@require_POST
def key_create(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = _owner(request, slug)
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _render(request, membership, "keys", status=400, key_form=form)
    creator = request.user if isinstance(request.user, User) else None
    key, raw = services.api_key_create(project=membership.project, name=form.cleaned_data["name"], created_by=creator)
    response = _render(request, membership, "keys", new_key=key, new_raw_key=raw)
    response["Cache-Control"] = "no-store"  # the raw key is in this response and nowhere else
    return response


@login_required
@require_POST
def key_revoke(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    membership = _owner(request, slug)
    key = selectors.api_key_get(project=membership.project, pk=pk)
    if key is None:
        raise Http404("No such key.")
    services.api_key_revoke(api_key=key)
    return _done(request, membership, "keys", f"Revoked the key {key.name} ({key.prefix}…).")


@login_required
@require_POST
def alias_save(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = _owner(request, slug)
    form = AliasForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.alias_set(
                project=membership.project,
                name=data["name"],
                target=data["target"],
                fallbacks=data["fallbacks"],
                retries=data["retries"],
                changed_by=_actor(request),
            )
        except ValidationError as exc:
            _form_error(form, exc)
        else:
            return _done(request, membership, "aliases", f"Saved the alias {data['name']} → {data['target']}.")
    return _render(request, membership, "aliases", status=400, alias_form=form)


@login_required
@require_POST
def alias_rollback(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = _owner(request, slug)
    form = AliasRollbackForm(request.POST)
    if form.is_valid():
        name = form.cleaned_data["name"]
        try:
            alias = services.alias_rollback(project=membership.project, name=name, changed_by=_actor(request))
        except ValidationError as exc:
            return _render(request, membership, "aliases", status=400, alias_errors=exc.messages)
        message = f"Rolled {name} back to {alias.target}." if alias else f"Rolled back: {name} no longer exists."
        return _done(request, membership, "aliases", message)
    return _render(request, membership, "aliases", status=400, alias_errors=["Name the alias to roll back."])


@login_required
@require_POST
def member_add(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = _owner(request, slug)
    project = membership.project
    form = MemberAddForm(request.POST)
    if form.is_valid():
        user = selectors.user_by_email(email=form.cleaned_data["email"])
        if user is None:
            form.add_error("email", "No account has this e-mail address; they need one first.")
        elif selectors.membership_for(user=user, slug=project.slug) is not None:
            form.add_error("email", "Already a member of this project.")
        else:
            services.membership_add(project=project, user=user, role=Membership.Role.MEMBER)
            return _done(request, membership, "members", f"Added {user.get_username()} as a member.")
    return _render(request, membership, "members", status=400, member_form=form)


@login_required
@require_POST
def member_remove(request: HtmxHttpRequest, slug: str, pk: int) -> HttpResponse:
    membership = _owner(request, slug)
    target = selectors.membership_get(project=membership.project, pk=pk)
    if target is None:
        raise Http404("No such member.")
    try:
        services.membership_remove(membership=target)
    except ValidationError as exc:
        return _render(request, membership, "members", status=400, member_errors=exc.messages)
    if target.pk == membership.pk:  # removed themselves: the page is no longer theirs
        messages.success(request, f"You left {membership.project.name}.")
        if request.htmx:
            response = HttpResponse("")
            response["HX-Redirect"] = "/"
            return response
        return redirect("home")
    return _done(request, membership, "members", f"Removed {target.user.get_username()} from the project.")


@login_required
@require_POST
def retention_save(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = _owner(request, slug)
    form = RetentionForm(request.POST)
    if form.is_valid():
        days = form.cleaned_data["days"]
        try:
            trace_services.retention_set(project=membership.project, days=days)
        except ValidationError as exc:
            _form_error(form, exc)
        else:
            return _done(request, membership, "retention", f"Traces are now kept {days} days.")
    return _render(request, membership, "retention", status=400, retention_form=form)
