"""Live progress of long jobs (clustering runs, judge runs, distillation jobs, routing profile runs).

A job's worker code calls `publish(kind, pk, **fields)` with the row fields it just wrote (status,
phase, progress, message, metrics). Events go to the channel-layer group `progress.<kind>.<pk>`;
the websocket consumer (opentracy_site/progress_consumer.py) forwards them to the job's page.

Publishing never raises and never slows the worker: `publish` merges the fields into the job's
pending state under a lock and returns; one daemon thread sends. Per job it sends at most one event
per `INTERVAL_S` (the newest merged state; nothing in between is lost from the state, only
coalesced) and a finished status at once. Like traces/live.py, the send goes through the server's
event loop when one runs in this process (the in-memory layer is only reachable that way: embedded
mode, where the worker runs inside the server), else straight through the layer from the thread
(the Redis layer from a separate Celery worker).

ETA: from the progress rate since the current phase began (a phase change, or the first event of a
job, restarts the clock): eta = (1 - progress) / rate. None until the phase has run for
`ETA_MIN_S` and moved by `ETA_MIN_PROGRESS`, so a first noisy step does not promise anything.
Phases run at different speeds, so it is the remaining time at the current pace, not a promise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.utils import timezone

log = logging.getLogger(__name__)

MESSAGE_TYPE = "progress.event"  # handled by ProgressConsumer.progress_event
INTERVAL_S = 0.25  # at most four events a second per job
ETA_MIN_S = 2.0
ETA_MIN_PROGRESS = 0.01
FINISHED = frozenset({"done", "failed", "cancelled"})
HISTORY_POINTS = 50  # the newest loss points carried by an event; the page dedups by step
KINDS = ("clustering", "judge", "distillation", "profile")


def group_name(kind: str, pk: int) -> str:
    return f"progress.{kind}.{pk}"


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """The event's JSON (msgpack-able) body from row fields: only what the page shows."""
    out: dict[str, Any] = {}
    for name in ("status", "phase", "message"):
        if name in fields:
            out[name] = str(fields[name] or "")[:500]
    if "progress" in fields and fields["progress"] is not None:
        out["progress"] = round(float(fields["progress"]), 4)
    metrics = fields.get("metrics")
    if isinstance(metrics, dict):
        history = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
        if metrics.get("steps"):
            out["steps"] = int(metrics["steps"])
        if history:
            last = history[-1]
            out["step"] = int(last.get("step", len(history)))
            if last.get("loss") is not None:
                out["loss"] = float(last["loss"])
            out["points"] = [
                {k: float(v) for k, v in h.items() if isinstance(v, (int, float))} for h in history[-HISTORY_POINTS:]
            ]
    return out


@dataclass
class _Job:
    state: dict[str, Any] = field(default_factory=dict)  # merged compact fields not yet sent
    dirty: bool = False
    final: bool = False
    sent_at: float = float("-inf")
    phase: str | None = None
    phase_t0: float = 0.0
    phase_p0: float = 0.0


class Coalescer:
    """Per-job latest state, throttled: `take_due` returns what may be sent now. Thread-safe;
    `clock` is injectable for tests."""

    def __init__(self, interval: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.lock = threading.Lock()
        self.jobs: dict[str, _Job] = {}

    def offer(self, group: str, event: dict[str, Any]) -> None:
        now = self.clock()
        with self.lock:
            job = self.jobs.setdefault(group, _Job(phase_t0=now, phase_p0=float(event.get("progress", 0.0))))
            phase = event.get("phase")
            if phase is not None and phase != job.phase:
                job.phase, job.phase_t0 = phase, now
                job.phase_p0 = float(event.get("progress", job.state.get("progress", job.phase_p0)))
            job.state.update(event)
            if "progress" in event:
                job.state["eta_s"] = self._eta(job, float(event["progress"]), now)
            job.dirty = True
            job.final = job.final or event.get("status") in FINISHED

    @staticmethod
    def _eta(job: _Job, progress: float, now: float) -> float | None:
        elapsed, moved = now - job.phase_t0, progress - job.phase_p0
        if elapsed < ETA_MIN_S or moved < ETA_MIN_PROGRESS:
            return None
        return round(max(0.0, 1.0 - progress) * elapsed / moved, 1)

    def take_due(self) -> list[tuple[str, dict[str, Any]]]:
        now = self.clock()
        due: list[tuple[str, dict[str, Any]]] = []
        with self.lock:
            for group, job in list(self.jobs.items()):
                if not job.dirty or not (job.final or now - job.sent_at >= self.interval):
                    continue
                due.append((group, dict(job.state)))
                job.dirty, job.sent_at = False, now
                job.state = {k: v for k, v in job.state.items() if k in ("status", "phase", "progress", "eta_s")}
                if job.final:
                    del self.jobs[group]
        return due

    def wait_s(self) -> float | None:
        """Seconds until the next dirty job may be sent; None when nothing is pending."""
        now = self.clock()
        with self.lock:
            waits = [
                0.0 if job.final else max(0.0, job.sent_at + self.interval - now)
                for job in self.jobs.values()
                if job.dirty
            ]
        return min(waits) if waits else None


_coalescer = Coalescer()
_wake = threading.Event()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _loop
    _loop = loop


def bind_running_loop() -> None:
    """Called on the server's event loop (ASGI lifespan start-up, and by the consumer)."""
    bind_loop(asyncio.get_running_loop())


def publish(kind: str, pk: int, **fields: Any) -> None:
    """Called by worker code after it wrote `fields` to job `pk`. Never raises, never blocks."""
    try:
        event = compact(fields)
        if not event:
            return
        _coalescer.offer(group_name(kind, pk), event)
        _ensure_thread()
        _wake.set()
    except Exception:
        log.exception("progress: could not publish %s %s", kind, pk)


def cancel(row: Any, kind: str, at_once: Collection[str]) -> None:
    """Cancel a job's row (clustering run, judge run, distillation job, profile run): at once when
    its status is in `at_once` (draft or queued: no worker holds it), else by setting
    `cancel_requested`, which its worker checks between steps. One cancelled at once is published
    here, since no worker will. The row is refreshed."""
    rows = type(row)._default_manager.filter(pk=row.pk)
    stopped = rows.filter(status__in=list(at_once)).update(
        status="cancelled", cancel_requested=True, finished_at=timezone.now(), message="Cancelled before it started."
    )
    if not stopped:
        rows.update(cancel_requested=True)
    row.refresh_from_db()
    if stopped:
        publish(kind, row.pk, status=row.status, message=row.message)


def _ensure_thread() -> None:
    global _thread
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="progress-publisher", daemon=True)
            _thread.start()


def _run() -> None:
    while True:
        _wake.wait(timeout=_coalescer.wait_s())
        _wake.clear()
        for group, event in _coalescer.take_due():
            _send(group, {"type": MESSAGE_TYPE, "event": event})


def _send(group: str, message: dict[str, Any]) -> None:
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        loop = _loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
            future.add_done_callback(_log_failure)
        elif not isinstance(layer, InMemoryChannelLayer):  # no server here: nobody can listen in memory
            async_to_sync(layer.group_send)(group, message)
    except Exception as exc:
        log.warning("progress: group_send to %s failed (%s: %s)", group, type(exc).__name__, exc)


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("progress: group_send failed (%s: %s)", type(exc).__name__, exc)
