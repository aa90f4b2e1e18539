"""Compiled routing policies for the request path, per (project, policy name), so a warm routed
request makes no database or ClickHouse call. Like gateway/cache.py: a saved policy, profile cell,
cluster or price drops the cache at once in this process and, through Redis in the distributed mode,
in every other (opentracy_site/invalidation.py; signals below); entries also expire after
OPENTRACY_CACHE_TTL_S. Writers that bypass signals (bulk_create, queryset.update) call invalidate().

Imported by RoutingConfig.ready() so the signals are connected in every process (workers change
cells and clusters); the router itself (numpy, scipy) is imported only when a policy is compiled."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from datasets.models import Cluster
from gateway.models import ModelPrice, Project
from opentracy_site import invalidation

from .models import ProfileCell, RoutingPolicy

if TYPE_CHECKING:
    from .router import Compiled

log = logging.getLogger(__name__)

NAME = "routing.policies"  # the invalidation channel's name for this cache
Key = tuple[int, str | None]  # (project, policy name); None: the project's default policy

# p50 latency of each candidate over the project's last 24 h of successful traces (max_latency_ms).
# One scan of a day of one project: the table is ordered by (project_id, timestamp), so it reads
# only that range; it runs when a policy is compiled, never per request.
LATENCY_SQL = """
SELECT resolved_model, quantile(0.5)(latency_ms)
FROM traces
WHERE project_id = {project_id:UInt64} AND timestamp >= now() - INTERVAL 1 DAY
  AND status = 200 AND resolved_model IN {models:Array(String)}
GROUP BY resolved_model
"""

_entries: dict[Key, tuple[float, Compiled | None]] = {}
_generation = 0  # bumped by invalidate(): a compile that began before a change is not cached
_lock = threading.Lock()


def recent_latency(project_id: int, models: list[str]) -> dict[str, float]:
    """{model: p50 latency ms} over the last 24 h; empty when ClickHouse cannot answer (routing
    must not fail because latency is unknown: the constraint is then not applied)."""
    if not models:
        return {}
    from opentracy_site import clickhouse

    try:
        _cols, rows = clickhouse.query(LATENCY_SQL, {"project_id": project_id, "models": models})
    except Exception:
        log.warning("recent latency of project %s unavailable; max_latency_ms not applied", project_id, exc_info=True)
        return {}
    return {str(model): float(p50) for model, p50 in rows}


def _compile(key: Key) -> Compiled | None:
    from .router import builtin_policy, compile_policy

    project_id, name = key
    if name is None:
        policy = RoutingPolicy.objects.filter(project_id=project_id, is_default=True).first()
        policy = policy or builtin_policy(project_id)
    else:
        policy = RoutingPolicy.objects.filter(project_id=project_id, name=name).first()
        if policy is None:
            return None
    return compile_policy(policy, latency_p50_ms=recent_latency(project_id, list(dict.fromkeys(policy.candidates))))


async def compiled(project_id: int, name: str | None) -> Compiled:
    """The compiled policy `name` of the project; None: its default policy, else the built-in one.
    Raises LookupError for a name the project has no policy by (cached too, so a bad alias does
    not cost a query per request)."""
    key = (project_id, name)
    hit = _entries.get(key)
    if hit is None or hit[0] < time.monotonic():
        generation = _generation
        found = await sync_to_async(_compile)(key)
        with _lock:
            if generation == _generation:
                _entries[key] = (time.monotonic() + settings.OPENTRACY_CACHE_TTL_S, found)
    else:
        found = hit[1]
    if found is None:
        raise LookupError(name)
    return found


def _clear() -> None:
    global _generation
    with _lock:
        _generation += 1
        _entries.clear()


def invalidate() -> None:
    """Drop every compiled policy, here and (with REDIS_URL) in every other process."""
    invalidation.changed(NAME)


invalidation.register(NAME, _clear)


def preload() -> None:
    """Load the prompt embedder and the shipped clusters' centroids in a daemon thread (server
    start-up), so the first routed request does not pay them (an ONNX export the first time ever)."""

    def run() -> None:
        try:
            from . import embedder, prior

            embedder.load()
            prior.centroids()
        except Exception:  # the first routed request retries and reports the error
            log.exception("router embedder: preload failed")

    threading.Thread(target=run, name="router-preload", daemon=True).start()


@receiver([post_save, post_delete], sender=Project)  # a new project may reuse a deleted one's id
@receiver([post_save, post_delete], sender=RoutingPolicy)
@receiver([post_save, post_delete], sender=ProfileCell)
@receiver([post_save, post_delete], sender=Cluster)
def _routing_changed(**kwargs: Any) -> None:
    invalidate()


@receiver([post_save, post_delete], sender=ModelPrice)
def _price_changed(**kwargs: Any) -> None:
    from traces.cost import invalidate_overrides

    invalidate_overrides()  # the router's prices come from the same override table (this process)
    invalidate()
