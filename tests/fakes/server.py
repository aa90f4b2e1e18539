"""An aiohttp server on 127.0.0.1 (free port) in a background thread with its own event loop,
the base of the fake provider servers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web


class LoopbackServer:
    name = "fake"

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []  # {"headers": {...}, "body": {...}} per request
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} server did not start")

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        # handler_cancellation: a "slow" handler stops when its client goes away; shutdown_timeout
        # keeps stop() quick even if one is still sleeping.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._runner = None
