"""Websocket routes of the traces app (mounted in opentracy_site/asgi.py under AuthMiddlewareStack).

The Origin check refuses sockets opened by other sites with the user's session cookie
(cross-site websocket hijacking); allowed origins are ALLOWED_HOSTS."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from .consumers import TraceTailConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/projects/<slug:slug>/traces", AllowedHostsOriginValidator(TraceTailConsumer.as_asgi())),
]
