"""Dropping in-memory caches in every process at once.

The hot path caches keys, aliases, credentials and routing policies per process (no DB call per
request). A change clears the cache in the process that made it; with REDIS_URL set it is also
published on CHANNEL, and every server and worker process listens (a daemon thread started with
the process) and clears the same cache, so a revoked key or a re-pointed alias takes effect on
every replica within milliseconds instead of after the cache's TTL. The TTL stays as the safety
net for a missed message (Redis restarting, a listener reconnecting).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "opentracy:invalidate"
RECONNECT_S = 1.0
# Messages carry their sender: a process has already cleared what it publishes, and clearing again
# when its own message comes back (later, from another thread) would drop what it cached since.
_SENDER = uuid.uuid4().hex

_handlers: dict[str, Callable[[], None]] = {}
_client: Any = None
_listener: threading.Thread | None = None
_lock = threading.Lock()


def register(name: str, clear: Callable[[], None]) -> None:
    """`clear` runs whenever any process reports that `name` changed."""
    _handlers[name] = clear


def _redis() -> Any:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _client


def changed(name: str) -> None:
    """Clear `name` here and tell the other processes. Never raises: a lost message costs at most
    the cache's TTL of staleness elsewhere."""
    _clear(name)
    if not settings.REDIS_URL:
        return
    try:
        _redis().publish(CHANNEL, f"{name} {_SENDER}")
    except Exception as exc:  # Redis down: the other processes fall back on their TTL
        log.warning("cache invalidation of %s not published: %s", name, exc)


def _clear(name: str) -> None:
    handler = _handlers.get(name)
    if handler is not None:
        handler()


def _listen() -> None:
    import redis

    while True:
        try:
            pubsub = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).pubsub(
                ignore_subscribe_messages=True
            )
            pubsub.subscribe(CHANNEL)
            # Whatever changed while we were not listening: start from empty caches.
            for name in list(_handlers):
                _clear(name)
            for message in pubsub.listen():
                if message.get("type") == "message":
                    name, _, sender = message["data"].decode().partition(" ")
                    if sender != _SENDER:
                        _clear(name)
        except Exception as exc:
            log.warning("cache invalidation listener: %s; reconnecting", exc)
            time.sleep(RECONNECT_S)


def start_listener() -> None:
    """Listen for other processes' changes (no-op without REDIS_URL, or when already listening)."""
    global _listener
    with _lock:
        if not settings.REDIS_URL or _listener is not None:
            return
        _listener = threading.Thread(target=_listen, name="cache-invalidation", daemon=True)
        _listener.start()
