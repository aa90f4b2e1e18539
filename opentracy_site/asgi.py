"""The ASGI entry point: `/v1` goes to the gateway's lean app, everything else to Django;
websockets through Channels; lifespan starts the trace writer, the embedded worker and the local
model preload."""

from __future__ import annotations

import logging
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from gateway.asgi import gateway_app  # noqa: E402
from opentracy_site import lifecycle, progress  # noqa: E402
from opentracy_site.progress_consumer import websocket_urlpatterns as progress_ws  # noqa: E402
from traces import live as traces_live  # noqa: E402
from traces.routing import websocket_urlpatterns as traces_ws  # noqa: E402

log = logging.getLogger(__name__)


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"].startswith("/v1/"):
        await gateway_app(scope, receive, send)
    else:
        await django_app(scope, receive, send)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await lifecycle.startup()
                traces_live.bind_running_loop()  # the live tail sends on this loop
                progress.bind_running_loop()  # so do jobs' progress events
            except Exception as exc:
                log.exception("start-up failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await lifecycle.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": AuthMiddlewareStack(URLRouter([*traces_ws, *progress_ws])),
        "lifespan": lifespan,
    }
)
