"""Liveness of long jobs (clustering, judge and profile runs, distillation jobs), so a worker that
dies (killed, out of memory, its host lost) does not leave its job "running" forever.

While a job's task runs, a thread of the worker process refreshes the job's heartbeat every
TTL / 4 seconds; the heartbeat expires after OPENTRACY_JOB_HEARTBEAT_S (TTL). Between a distillation
job's phases (the chain has queued the next one, e.g. training on the `gpu` queue), and while a job
queued again waits for a worker, the job is marked as handed over instead, for up to a week: waiting
for a free GPU worker is not death. The periodic sweep (opentracy_site/recovery.py `sweep_dead`)
puts right a running job that has neither. A dead process stops beating by itself, which is the
point: no worker has to report its own death.

The store is Redis with REDIS_URL (every worker and the beat see the same keys), else a dict in
this process (the embedded mode: worker and beat share the process; a restart is handled by
opentracy_site/recovery.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)
PREFIX = "opentracy:heartbeat"
HANDED_TTL_S = 7 * 24 * 3600  # a job waits this long for a worker at most before the sweep sees it dead


class _LocalStore:
    """Redis's SET / EXISTS / DELETE with expiry, for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, float] = {}  # key -> expiry (monotonic), inf for none

    def set(self, key: str, value: str, ex: int | None = None) -> None:
        with self._lock:
            self._data[key] = time.monotonic() + ex if ex else float("inf")

    def exists(self, *keys: str) -> int:
        now = time.monotonic()
        with self._lock:
            return sum(1 for k in keys if self._data.get(k, 0.0) > now)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._data.pop(k, None)


_local = _LocalStore()
_clients: dict[str, Any] = {}  # Redis clients by URL


def _store() -> Any:
    url = settings.REDIS_URL
    if not url:
        return _local
    if url not in _clients:
        import redis

        _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _clients[url]


def _keys(kind: str, pk: int) -> tuple[str, str]:
    return f"{PREFIX}:{kind}:{pk}:alive", f"{PREFIX}:{kind}:{pk}:handed"


def _ttl() -> int:
    return max(1, int(settings.OPENTRACY_JOB_HEARTBEAT_S))


def _beat(kind: str, pk: int) -> None:
    _store().set(_keys(kind, pk)[0], "1", ex=_ttl())


@contextmanager
def beating(kind: str, pk: int) -> Iterator[None]:
    """Keep the job alive while the block runs (one phase). On leaving, the job is marked as
    handed over: a later phase, or the job's end (`forget`), clears that."""
    alive, handed = _keys(kind, pk)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(_ttl() / 4):
            try:
                _beat(kind, pk)
            except Exception:  # a Redis hiccup must not kill the job; the next beat retries
                log.warning("heartbeat of %s %s not sent", kind, pk, exc_info=True)

    _beat(kind, pk)
    _store().delete(handed)
    thread = threading.Thread(target=refresh, name=f"heartbeat-{kind}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        hand_over(kind, pk)
        _store().delete(alive)


def hand_over(kind: str, pk: int) -> None:
    """The job waits for a worker to pick it up (its task is queued, or retried after an error)."""
    _store().set(_keys(kind, pk)[1], "1", ex=HANDED_TTL_S)


@contextmanager
def watched(kind: str, pk: int) -> Iterator[None]:
    """A job run by one task: beating while it runs, forgotten when the task returns."""
    with beating(kind, pk):
        yield
    forget(kind, pk)


def forget(kind: str, pk: int) -> None:
    """The job ended: nothing to watch any more."""
    _store().delete(*_keys(kind, pk))


def is_dead(kind: str, pk: int) -> bool:
    """No heartbeat and not handed over to a later phase."""
    return not _store().exists(*_keys(kind, pk))
