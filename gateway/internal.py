"""Calls the engine makes to itself (naming clusters, judging rows): the same `/v1` path any app
takes, so aliases, fallbacks, retries, budgets, cost and the trace all apply, run in-process
without an API key. Each trace carries `metadata.opentracy_internal = <purpose>`, which clustering
skips so the engine never clusters its own bookkeeping."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

from . import cache
from .chat import ChatCall
from .io import INTERNAL_SCOPE_KEY
from .models import Project

INTERNAL_METADATA_KEY = "opentracy_internal"
_local = threading.local()


class InternalCallError(Exception):
    """The engine answered with an error (OpenAI's error body): no credentials, budget, upstream…"""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


async def chat(*, project: Project, body: dict[str, Any], purpose: str) -> dict[str, Any]:
    """A non-streamed chat completion for `project`; returns OpenAI's response body, with the
    trace id under `_trace_id`. Raises InternalCallError with the engine's error message."""
    metadata = {**(body.get("metadata") or {}), INTERNAL_METADATA_KEY: purpose}
    raw = orjson.dumps({**body, "stream": False, "metadata": metadata})
    key = cache.KeyInfo(
        key_id=0, project_id=project.id, name=f"internal:{purpose}", retention_days=project.retention_days
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        INTERNAL_SCOPE_KEY: key,
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the call only reads past the body to notice a client leaving; nobody leaves
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    status, headers, parts = 0, {}, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], dict(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await ChatCall(scope, receive, send, max_body=len(raw) + 1).run()
    data = orjson.loads(b"".join(parts) or b"{}")
    if status != 200:
        error = data.get("error") if isinstance(data, dict) else None
        raise InternalCallError(status, str((error or {}).get("message") or "no answer"))
    data["_trace_id"] = headers.get(b"x-opentracy-trace-id", b"").decode()
    return dict(data)


def chat_sync(*, project: Project, body: dict[str, Any], purpose: str) -> dict[str, Any]:
    """`chat` from synchronous code (Celery tasks). Each thread keeps one event loop, so the
    provider connection pool (one per loop) is reused across calls."""
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop.run_until_complete(chat(project=project, body=body, purpose=purpose))


def reply_text(data: dict[str, Any]) -> str:
    """The assistant's text in a chat completion body ('' when there is none)."""
    try:
        return str(data["choices"][0]["message"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
