"""Reads for the dashboard and the REST API, always scoped to a project."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from .models import Alias, AliasChange, Project


def projects_for_user(user: User | AnonymousUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(membership__user=user).order_by("slug")


def alias_get(*, project: Project, name: str) -> Alias | None:
    return Alias.objects.filter(project=project, name=name).first()


def alias_history(*, project: Project, name: str) -> QuerySet[AliasChange]:
    return AliasChange.objects.filter(project=project, name=name)
