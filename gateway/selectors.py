"""Reads for the dashboard and the REST API, always scoped to a project."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from . import failover
from .models import Alias, AliasChange, ApiKey, Membership, Project, ProviderCredential


def projects_for_user(user: User | AnonymousUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(membership__user=user).order_by("slug")


def alias_get(*, project: Project, name: str) -> Alias | None:
    return Alias.objects.filter(project=project, name=name).first()


def alias_history(*, project: Project, name: str) -> QuerySet[AliasChange]:
    return AliasChange.objects.filter(project=project, name=name)


def membership_for(*, user: User | AnonymousUser, slug: str) -> Membership | None:
    """The user's membership of the project `slug` (with the project), or None."""
    if not user.is_authenticated:
        return None
    return Membership.objects.select_related("project").filter(user=user, project__slug=slug).first()


def credentials_for_project(*, project: Project) -> QuerySet[ProviderCredential]:
    return ProviderCredential.objects.filter(project=project).order_by("provider", "label")


def credential_get(*, project: Project, pk: int) -> ProviderCredential | None:
    return ProviderCredential.objects.filter(project=project, pk=pk).first()


def target_cooldowns(*, project: Project) -> list[dict[str, Any]]:
    """The project's targets with recent failures or a cooldown, in this process."""
    return failover.cooldowns(project.id)


# ---------------------------------------------------------------- the settings page


def api_keys_for_project(*, project: Project) -> QuerySet[ApiKey]:
    """Active keys first, newest first."""
    return ApiKey.objects.filter(project=project).select_related("created_by").order_by("-revoked_at", "-created_at")


def api_key_get(*, project: Project, pk: int) -> ApiKey | None:
    return ApiKey.objects.filter(project=project, pk=pk).first()


def aliases_for_project(*, project: Project) -> QuerySet[Alias]:
    return Alias.objects.filter(project=project).order_by("name")


def alias_histories(*, project: Project, per_alias: int = 10) -> dict[str, list[AliasChange]]:
    """The latest changes per alias name (deleted aliases included), newest first."""
    histories: dict[str, list[AliasChange]] = {}
    for change in AliasChange.objects.filter(project=project)[:1000]:
        changes = histories.setdefault(change.name, [])
        if len(changes) < per_alias:
            changes.append(change)
    return histories


def members_for_project(*, project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user").order_by("role", "user__username")


def membership_get(*, project: Project, pk: int) -> Membership | None:
    return Membership.objects.filter(project=project, pk=pk).select_related("user").first()


def user_by_email(*, email: str) -> User | None:
    """An existing account by e-mail address (or by a username that is one)."""
    return (
        User.objects.filter(Q(email__iexact=email) | Q(username__iexact=email), is_active=True).order_by("pk").first()
    )
