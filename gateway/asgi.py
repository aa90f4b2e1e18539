"""The lean ASGI application for `/v1`, mounted beside Django's in opentracy_site/asgi.py.

It uses Django's settings, models and caches but not its request cycle: DESIGN.md measured that
cycle at about 1.3 ms per call on this machine, beyond the gateway's overhead budget.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from . import cache
from .chat import ChatCall
from .embeddings import EmbeddingsCall
from .errors import GatewayError, model_not_found
from .io import Receive, Send, authenticate, send_json, trace_headers
from .messages import MessagesCall
from .providers import PROVIDERS
from .resolve import AUTO, ROUTER_PREFIX
from .route import handle as route

CALLS: dict[str, type[ChatCall]] = {
    "/v1/chat/completions": ChatCall,
    "/v1/embeddings": EmbeddingsCall,
    "/v1/messages": MessagesCall,
}
CREATED = int(time.mktime((2024, 1, 1, 0, 0, 0, 0, 0, 0)))


def _policies(project_id: int) -> list[tuple[str, bool]]:
    from routing.models import RoutingPolicy

    return list(RoutingPolicy.objects.filter(project_id=project_id).values_list("name", "is_default"))


async def _model_entries(project_id: int) -> list[dict[str, Any]]:
    aliases = await cache.aliases(project_id)
    entries = [
        {"id": name, "object": "model", "created": CREATED, "owned_by": f"alias:{route.target}"}
        for name, route in sorted(aliases.items())
    ]
    # The router's names: `auto` (the default policy, else the built-in one) and each policy.
    policies = await sync_to_async(_policies)(project_id)
    if AUTO not in aliases:
        default = next((name for name, is_default in policies if is_default), AUTO)
        entries.append({"id": AUTO, "object": "model", "created": CREATED, "owned_by": f"router:{default}"})
    entries += [
        {"id": f"{ROUTER_PREFIX}{name}", "object": "model", "created": CREATED, "owned_by": "router"}
        for name, _default in sorted(policies)
    ]
    stored = await cache.credentials(project_id)
    for provider in PROVIDERS.values():
        if not stored.get(provider.name) and provider.credential(None) is None:
            continue
        entries += [
            {"id": f"{provider.name}/{m}", "object": "model", "created": CREATED, "owned_by": provider.name}
            for m in provider.known_models
        ]
    return entries


async def models(scope: dict[str, Any], send: Send, model_id: str | None) -> None:
    key = await authenticate(scope)
    entries = await _model_entries(key.project_id)
    if model_id is None:
        payload: dict[str, Any] = {"object": "list", "data": entries}
    else:
        found = [e for e in entries if e["id"] == model_id]
        if not found:
            raise model_not_found(model_id)
        payload = found[0]
    await send_json(send, 200, orjson.dumps(payload), [])


async def gateway_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    path, method = scope["path"].rstrip("/"), scope["method"]
    call = CALLS.get(path) if method == "POST" else None
    if call is not None:
        await call(scope, receive, send, settings.OPENTRACY_MAX_BODY_BYTES).run()
        return
    if path == "/v1/route" and method == "POST":
        await route(scope, receive, send)  # answers its own errors
        return
    try:
        if path == "/v1/models" and method == "GET":
            await models(scope, send, None)
        elif path.startswith("/v1/models/") and method == "GET":
            await models(scope, send, path.removeprefix("/v1/models/"))
        else:
            raise GatewayError(404, f"Unknown request URL: {method} {scope['path']}.", code="unknown_url")
    except GatewayError as exc:
        await send_json(send, exc.status, exc.body(), trace_headers("", "", 0.0))
