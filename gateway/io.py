"""ASGI plumbing shared by the /v1 endpoints: headers, the caller's key, the body, JSON replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import cache
from .errors import too_large, unauthorized

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Headers = list[tuple[bytes, bytes]]
INTERNAL_SCOPE_KEY = "opentracy.internal_key"

JSON = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def authenticate(scope: dict[str, Any]) -> cache.KeyInfo:
    """The key from `Authorization: Bearer ...`, or `x-api-key` (what Anthropic's SDK sends).
    The engine's own in-process calls (gateway/internal.py) carry theirs in the scope, a key no
    server ever puts there."""
    internal = scope.get(INTERNAL_SCOPE_KEY)
    if isinstance(internal, cache.KeyInfo):
        return internal
    scheme, _, token = header(scope, b"authorization").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else header(scope, b"x-api-key").strip()
    if not token:
        raise unauthorized()
    info = await cache.key_info(token)
    if info is None:
        raise unauthorized("Incorrect API key provided. Create one with `manage.py create_api_key`.")
    return info


async def read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def trace_headers(trace_id: str, model: str, overhead_ms: float) -> Headers:
    return [
        (b"x-opentracy-trace-id", trace_id.encode()),
        (b"x-request-id", trace_id.encode()),
        (b"x-opentracy-model", model.encode()),
        (b"x-opentracy-overhead-ms", f"{overhead_ms:.3f}".encode()),
    ]


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [JSON, *headers]})
    await send({"type": "http.response.body", "body": body})
