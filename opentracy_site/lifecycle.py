"""What the server starts and stops with the process (ASGI lifespan)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys

from django.conf import settings

from gateway.providers import http as upstream_http
from traces.writer import get_writer

from . import invalidation
from .recovery import recover_interrupted
from .worker import start_embedded_worker, stop_embedded_worker


async def startup() -> None:
    get_writer()
    invalidation.start_listener()  # other replicas' changes to keys, aliases, policies (with REDIS_URL)
    if settings.OPENTRACY_EMBEDDED_WORKER:
        # Nothing can still be running, and queued task messages died with the in-memory broker.
        await asyncio.to_thread(recover_interrupted)
        # Celery's Django fixup touches the DB as the worker initialises: not from the event loop.
        await asyncio.to_thread(start_embedded_worker)
    if settings.OPENTRACY_LOCAL_MODEL_PRELOAD:
        from gateway.providers.local import preload

        preload()  # in the background: the first local request should not pay the load
        # The router's imports (numpy, scipy: ~0.7 s) off the event loop, then its prompt embedder
        # in the background: the first `model="auto"` request should not pay them either.
        router_cache = await asyncio.to_thread(importlib.import_module, "routing.cache")
        router_cache.preload()
    # Everything imported so far lives as long as the process: keep it out of the collector's scans,
    # which otherwise show up as latency spikes on the hot path.
    gc.freeze()
    # Background threads (trace writer, embedded worker) hand the GIL back to the event loop
    # every 0.5 ms instead of Python's default 5 ms, which would otherwise set the tail latency.
    sys.setswitchinterval(0.0005)


async def shutdown() -> None:
    await upstream_http.close_sessions()
    get_writer().stop()
    if settings.OPENTRACY_EMBEDDED_WORKER:
        await asyncio.to_thread(stop_embedded_worker)
