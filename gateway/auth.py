"""API-key authentication and project scoping for the REST API (/api/...).

A request is authenticated either by an engine key (`Authorization: Bearer ot-...`), which pins it
to the key's project, or by a logged-in session, which may use any project the user belongs to
(`?project=<slug>`, else their first project)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .keys import hash_key
from .models import ApiKey, Project
from .selectors import projects_for_user


@dataclass(frozen=True)
class KeyPrincipal:
    """Stands in for request.user when a request is authenticated by an engine key."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False

    def __str__(self) -> str:
        return f"api-key:{self.api_key.name}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[KeyPrincipal, ApiKey] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        key = ApiKey.objects.select_related("project").filter(key_hash=hash_key(token.strip())).first()
        if key is None or not key.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return KeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


def request_project(request: Request) -> Project:
    """The project this request acts on; 404 for a project the caller does not belong to."""
    user: Any = request.user
    if isinstance(user, KeyPrincipal):
        return user.api_key.project
    projects = projects_for_user(user)
    slug = request.query_params.get("project")
    project = projects.filter(slug=slug).first() if slug else projects.first()
    if project is None:
        raise Http404("No such project.")
    return project


def actor(request: Request) -> str:
    """Who made a change, as recorded in histories."""
    user: Any = request.user
    if isinstance(user, KeyPrincipal):
        return str(user)
    return str(user.get_username())


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describes engine keys in the OpenAPI schema (/api/schema/)."""

    target_class = "gateway.auth.ApiKeyAuthentication"
    name = "engineKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An engine API key (ot-...)."}
