"""The embedded Celery worker: in embedded mode the server process consumes the `default` and
`gpu` queues from the in-memory broker on a thread pool, so tasks stay plain Celery tasks and
distributed mode only changes the broker URL and runs `celery worker` processes."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .celery import app

log = logging.getLogger(__name__)
_worker: Any = None


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
    return worker


def stop_embedded_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.stop(in_sighandler=False)
        _worker = None
