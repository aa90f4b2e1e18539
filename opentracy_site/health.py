"""Liveness, readiness and the trace writer's counters."""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.failover import cooling_count
from gateway.metrics import COOLING, REGISTRY
from opentracy_site import clickhouse
from traces.writer import get_writer


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_db() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("memory://"):
        return  # in-process: reachable while the process runs
    from opentracy_site.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (("database", _check_db), ("clickhouse", clickhouse.ping), ("broker", _check_broker)):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"failing: {type(exc).__name__}"
    failing = [name for name, state in checks.items() if state != "ok"]
    body = {"status": "unavailable" if failing else "ready", "failing": failing, "checks": checks}
    return JsonResponse(body, status=503 if failing else 200)


class _WriterCollector(Collector):
    """The trace writer's own counters, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        writer = get_writer()
        for name, value in writer.stats.items():
            yield CounterMetricFamily(f"opentracy_traces_{name}", f"Traces {name} by the writer.", value=value)
        yield GaugeMetricFamily("opentracy_traces_queue_depth", "Traces waiting in memory.", value=writer.queue_depth())
        yield GaugeMetricFamily(
            "opentracy_traces_spool_files", "Spool files waiting for replay.", value=len(writer.pending_spool_files())
        )


REGISTRY.register(_WriterCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: gateway traffic, reliability, cost, and the trace writer."""
    COOLING.set(cooling_count())
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
