"""Reads for the dashboard and the REST API, always scoped to a project."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from . import failover
from .models import Alias, AliasChange, Membership, Project, ProviderCredential


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
