"""The live tail's websocket: `ws/projects/<slug>/traces`.

Session-authenticated (AuthMiddlewareStack) and for the project's members only. A refused socket
is accepted and then closed with a code the browser can read (closing before accepting would
only give the client an HTTP 403): 4401 without a session, 4403 for anyone who is not a member
(a project that does not exist answers the same, so slugs do not leak), 4400 for bad filters.

The socket's query string takes the traces page's filters (`?model=...&status=error`); only rows
that pass them are sent, so the tail shows what a reload of the filtered page would.

Each `traces.batch` message from the trace writer (traces/live.py) is sent on as one HTML
fragment for htmx's ws extension: the rows inside
`<tbody hx-swap-oob="afterbegin:#trace-rows">`, so htmx prepends them to the traces table.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import QueryDict
from django.template.loader import select_template

from gateway import selectors

from . import live
from .filters import FilterError, TraceFilters, matches, parse_filters

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_FILTERS = 4400
RECHECK_S = 30.0  # membership is checked again this often while the socket is open
# The traces page's own row fragment when it exists; else a standalone one.
ROW_TEMPLATES = ["traces/_trace_row.html", "traces/_live_row.html"]


def render_rows(rows: list[dict[str, Any]], project: Any, *, first: bool = True) -> str:
    template = select_template(ROW_TEMPLATES)
    # Oldest first: each prepended row lands above the previous, so the newest ends on top.
    html = "".join(template.render({"trace": row, "project": project, "live": True}) for row in rows)
    # Rows rendered (escaped) above; the "no traces match" line (always on the page, hidden when
    # rows are shown) goes with the socket's first rows: deleting it again would be an htmx error.
    gone = '<p id="no-traces" hx-swap-oob="delete"></p>' if first else ""
    return f'<tbody hx-swap-oob="afterbegin:#trace-rows">{html}</tbody>{gone}'


class TraceTailConsumer(AsyncWebsocketConsumer):
    project: Any = None
    group: str = ""
    checked_at: float = 0.0
    filters: TraceFilters | None = None
    sent_rows: bool = False

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        membership = await database_sync_to_async(selectors.membership_for)(user=user, slug=slug)
        if membership is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        try:
            query = QueryDict(self.scope.get("query_string", b"").decode())
            self.filters = parse_filters(query, all_time=True)
        except FilterError:
            await self.close(code=CLOSE_BAD_FILTERS)
            return
        self.project = membership.project
        self.checked_at = time.monotonic()
        self.group = live.group_name(self.project.id)
        live.bind_loop(asyncio.get_running_loop())
        await self.channel_layer.group_add(self.group, self.channel_name)
        live.listener_added()

    async def disconnect(self, code: int) -> None:
        if self.group:
            live.listener_removed()
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = ""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing the tail needs (htmx's ws extension may send form values)."""

    async def traces_batch(self, event: dict[str, Any]) -> None:
        if time.monotonic() - self.checked_at > RECHECK_S:
            user = self.scope["user"]
            membership = await database_sync_to_async(selectors.membership_for)(user=user, slug=self.project.slug)
            if membership is None:  # removed from the project while watching
                await self.close(code=CLOSE_FORBIDDEN)
                return
            self.checked_at = time.monotonic()
        rows = [r for r in event["rows"] if self.filters is None or matches(self.filters, r)]
        if rows:
            await self.send(text_data=render_rows(rows, self.project, first=not self.sent_rows))
            self.sent_rows = True
