"""The progress websocket: `ws/projects/<slug>/progress/<kind>/<pk>` (kinds in progress.KINDS).

Session-authenticated and for the project's members only, refused like the live tail
(traces/consumers.py): accepted, then closed with 4401 without a session, 4403 for anyone who is
not a member (a project that does not exist answers the same), 4404 for a job that is not the
project's (or does not exist: the same answer, so ids of other projects do not leak). On connect it
sends the job's current state read from its row, then each event published by opentracy_site.progress
as JSON: `{"status", "phase", "progress", "message", "eta_s", "step", "steps", "loss", "points"}`
(an event holds the fields that changed; the page merges them)."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from gateway import selectors

from . import progress

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
STATE_FIELDS = ("status", "phase", "progress", "message", "metrics")


def _job_row(kind: str, project_id: int, pk: int) -> dict[str, Any] | None:
    """The job's state fields when it belongs to the project, else None."""
    from datasets.models import ClusteringRun, JudgeRun
    from distillation.models import DistillationJob
    from routing.models import ProfileRun

    lookups: dict[str, Any] = {
        "clustering": ClusteringRun.objects.filter(project_id=project_id),
        "judge": JudgeRun.objects.filter(version__dataset__project_id=project_id),
        "distillation": DistillationJob.objects.filter(project_id=project_id),
        "profile": ProfileRun.objects.filter(policy__project_id=project_id),
    }
    qs = lookups.get(kind)
    if qs is None:
        return None
    names = [f.name for f in qs.model._meta.concrete_fields if f.name in STATE_FIELDS]
    row: dict[str, Any] | None = qs.filter(pk=pk).values(*names).first()
    return row


class ProgressConsumer(AsyncWebsocketConsumer):
    group: str = ""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        kwargs = self.scope["url_route"]["kwargs"]
        membership = await database_sync_to_async(selectors.membership_for)(user=user, slug=kwargs["slug"])
        if membership is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        kind, pk = kwargs["kind"], int(kwargs["pk"])
        progress.bind_running_loop()
        # Join before reading the row: an event published in between is not missed.
        self.group = progress.group_name(kind, pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        row = await database_sync_to_async(_job_row)(kind, membership.project_id, pk)
        if row is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = ""
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send(text_data=json.dumps({**progress.compact(row), "initial": True}))

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = ""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Nothing to receive: the page only listens."""

    async def progress_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message["event"]))


websocket_urlpatterns: list[Any] = [
    path(
        "ws/projects/<slug:slug>/progress/<str:kind>/<int:pk>",
        AllowedHostsOriginValidator(ProgressConsumer.as_asgi()),
    ),
]
