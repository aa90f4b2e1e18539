"""The embedded Celery worker: in embedded mode the server process consumes the `default` and
`gpu` queues from the in-memory broker on a thread pool, so tasks stay plain Celery tasks and
distributed mode only changes the broker URL and runs `celery worker` processes.

Periodic tasks (CELERY_BEAT_SCHEDULE) run the same way: Celery's beat service on a thread of this
process (a beat process would not share the in-memory broker), with the in-memory scheduler (no
schedule file: after a restart each entry first fires one interval later). Distributed mode runs
one `celery -A opentracy_site beat` instead."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings

from .celery import app

log = logging.getLogger(__name__)
_worker: Any = None
_beat: Any = None


def start_embedded_worker(concurrency: int = 2) -> Any:
    global _worker
    if _worker is not None:
        return _worker
    worker = app.WorkController(
        hostname="embedded@opentracy",
        pool_cls="threads",
        concurrency=concurrency,
        queues=["default", "gpu"],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
    )
    threading.Thread(target=worker.start, name="celery-embedded", daemon=True).start()
    _worker = worker
    log.info("embedded Celery worker consuming default and gpu (broker %s)", app.conf.broker_url)
    if settings.OPENTRACY_EMBEDDED_BEAT:
        start_embedded_beat()
    return worker


def start_embedded_beat() -> Any:
    """Celery beat on a daemon thread (it wakes at least every second, so it stops promptly)."""
    global _beat
    if _beat is not None:
        return _beat
    from celery.beat import EmbeddedService

    beat = EmbeddedService(app, thread=True, scheduler_cls="celery.beat:Scheduler")
    beat.start()
    _beat = beat
    log.info("embedded Celery beat: %s", ", ".join(sorted(app.conf.beat_schedule)) or "nothing scheduled")
    return beat


def stop_embedded_beat() -> None:
    global _beat
    if _beat is not None:
        _beat.stop()
        _beat = None


def stop_embedded_worker() -> None:
    global _worker
    stop_embedded_beat()
    if _worker is not None:
        _worker.stop(in_sighandler=False)
        _worker = None


def wait_idle(timeout_s: float = 30.0) -> bool:
    """Wait until this process's worker runs and holds no task and its queues are empty; False
    if it is still busy after `timeout_s`. Tests call it before flushing the database, which a
    running task would otherwise race (on Postgres, TRUNCATE deadlocks with its queries)."""
    from celery.worker import state

    if _worker is None:
        return True
    deadline = time.monotonic() + timeout_s
    idle_looks = 0
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        while True:
            queued = sum(channel.queue_declare(queue=q).message_count for q in ("default", "gpu"))
            idle = not queued and not state.active_requests and not state.reserved_requests
            # Twice in a row: a message the worker has just taken off the queue is in neither place
            # until it registers the request.
            idle_looks = idle_looks + 1 if idle else 0
            if idle_looks == 2:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01 if idle else 0.05)
