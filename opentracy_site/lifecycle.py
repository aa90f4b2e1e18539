"""What the server starts and stops with the process (ASGI lifespan)."""

from __future__ import annotations

from django.conf import settings

from gateway.providers import http as upstream_http
from traces.writer import get_writer

from .worker import start_embedded_worker, stop_embedded_worker


async def startup() -> None:
    get_writer()
    if settings.OPENTRACY_EMBEDDED_WORKER:
        start_embedded_worker()
    if settings.OPENTRACY_LOCAL_MODEL_PRELOAD:
        from gateway.providers.local import preload

        preload()  # in the background: the first local request should not pay the load


async def shutdown() -> None:
    await upstream_http.close_sessions()
    get_writer().stop()
    if settings.OPENTRACY_EMBEDDED_WORKER:
        stop_embedded_worker()
