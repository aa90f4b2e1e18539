"""Live tail: the trace writer publishes a compact summary of every stored trace to its project's
channel-layer group (`traces.<project_id>`), and websocket consumers (traces/consumers.py) push the
rows to the traces page.

Publishing must never slow or break the writer:
- one group message per project per batch (a list of rows), built from what the writer already has;
- nothing is built when nobody can be listening (no channel layer; the in-memory layer with no
  socket open in this process);
- the send runs on the server's event loop (`run_coroutine_threadsafe`, not awaited: the writer
  thread goes straight back to writing). The in-memory layer's queues belong to that loop, so this is
  also the only thread-safe way to reach it. In a process without a server loop (a Celery worker,
  a management command) with the Redis layer, a small daemon thread sends through a bounded queue;
- every failure is caught and logged, and a full queue drops the live message (the trace is stored;
  the page shows it on reload).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

MESSAGE_TYPE = "traces.batch"  # handled by TraceTailConsumer.traces_batch
PREVIEW_CHARS = 120
SEARCH_CHARS = 4000  # of the prompt and of the response, for a live tail filtered by text (`q`)
MAX_ROWS_PER_MESSAGE = 200  # a burst beyond this is summarised by its newest rows only

_loop: asyncio.AbstractEventLoop | None = None
_listeners = 0  # sockets open in this process (counted by the consumer)
_listeners_lock = threading.Lock()
_fallback: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=1000)
_fallback_thread: threading.Thread | None = None


def group_name(project_id: int) -> str:
    return f"traces.{project_id}"


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The server's event loop; live messages are sent on it (called at start-up and on connect)."""
    global _loop
    _loop = loop


def bind_running_loop() -> None:
    """Called from the server's event loop (ASGI lifespan start-up)."""
    bind_loop(asyncio.get_running_loop())


def listener_added() -> None:
    global _listeners
    with _listeners_lock:
        _listeners += 1


def listener_removed() -> None:
    global _listeners
    with _listeners_lock:
        _listeners = max(_listeners - 1, 0)


def prompt_preview(request_messages: Any, limit: int = PREVIEW_CHARS) -> str:
    """The last user message's text, shortened; '' when there is none."""
    messages = request_messages
    if isinstance(messages, (str, bytes)):
        try:
            messages = orjson.loads(messages) if messages else []
        except orjson.JSONDecodeError:
            return _shorten(str(messages), limit)
    if isinstance(messages, str):  # an embeddings input
        return _shorten(messages, limit)
    if not isinstance(messages, list):
        return ""
    if messages and isinstance(messages[0], str):  # embeddings inputs
        return _shorten(messages[0], limit)
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return _shorten(str(content or ""), limit)
    return ""


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the live row shows, JSON/msgpack-able (the Redis layer serialises it). Keys as
    traces.selectors.trace_list names them, so the traces page's row template renders it."""
    ts = datetime.fromtimestamp(float(record["timestamp"]), tz=UTC)
    prompt = int(record.get("prompt_tokens") or 0)
    completion = int(record.get("completion_tokens") or 0)
    cost = record.get("cost_total_usd")
    preview = prompt_preview(record.get("request_messages", ""))
    return {
        "trace_id": str(record["trace_id"]),
        "timestamp": ts.isoformat(),
        "model": record.get("resolved_model") or record.get("requested_model") or "",
        "requested_model": record.get("requested_model", ""),
        "resolved_model": record.get("resolved_model", ""),
        "provider": record.get("provider", ""),
        "status": int(record.get("status", 200)),
        "latency_ms": float(record.get("latency_ms") or 0.0),
        "cost_total_usd": None if cost is None else float(cost),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens": prompt + completion,
        "alias": record.get("alias", ""),
        "error_class": record.get("error_class", ""),
        "preview": preview,  # the name the traces page's row template reads
        "prompt_preview": preview,
        # For the filters of a live tail (traces.filters.matches); not shown.
        "api_key_id": int(record.get("api_key_id") or 0),
        "metadata": {str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
        "tags": [str(t) for t in record.get("tags") or ()],
        "search_text": _search_text(record),
    }


def _search_text(record: dict[str, Any]) -> str:
    parts = (record.get("request_messages"), record.get("response_message"))
    texts = [p if isinstance(p, str) else orjson.dumps(p).decode() for p in parts if p]
    return "\n".join(t[:SEARCH_CHARS] for t in texts).lower()


def _can_deliver(layer: BaseChannelLayer) -> bool:
    if isinstance(layer, InMemoryChannelLayer):
        # Only sockets of this process can receive, and only through the server's loop.
        return _listeners > 0 and _loop is not None and _loop.is_running()
    return True


def publish(batch: Sequence[dict[str, Any]]) -> None:
    """Called by the writer thread once `batch` (priced records) is stored. Never raises."""
    try:
        layer = get_channel_layer()
        if layer is None or not _can_deliver(layer):
            return
        per_project: dict[int, list[dict[str, Any]]] = {}
        for record in batch:
            per_project.setdefault(int(record.get("project_id", 0)), []).append(record)
        for project_id, records in per_project.items():
            records.sort(key=lambda r: float(r["timestamp"]))  # oldest first: each is prepended, newest on top
            # Only the newest rows are sent, so only they are summarised.
            rows = [summary(r) for r in records[-MAX_ROWS_PER_MESSAGE:]]
            _send(layer, group_name(project_id), {"type": MESSAGE_TYPE, "project_id": project_id, "rows": rows})
    except Exception:
        log.exception("live tail: could not publish a batch of %d traces", len(batch))


def _send(layer: BaseChannelLayer, group: str, message: dict[str, Any]) -> None:
    loop = _loop
    if loop is not None and loop.is_running():
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        future.add_done_callback(_log_failure)
        return
    _start_fallback()
    try:
        _fallback.put_nowait((group, message))
    except queue.Full:
        log.warning("live tail: publish queue full, dropping a live message for %s", group)


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("live tail: group_send failed (%s: %s)", type(exc).__name__, exc)


def _start_fallback() -> None:
    global _fallback_thread
    with _listeners_lock:
        if _fallback_thread is None or not _fallback_thread.is_alive():
            _fallback_thread = threading.Thread(target=_fallback_run, name="live-tail-publisher", daemon=True)
            _fallback_thread.start()


def _fallback_run() -> None:
    while True:
        group, message = _fallback.get()
        try:
            layer = get_channel_layer()
            if layer is not None:
                async_to_sync(layer.group_send)(group, message)
        except Exception as exc:
            log.warning("live tail: group_send failed (%s: %s)", type(exc).__name__, exc)
