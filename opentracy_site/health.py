"""Liveness, readiness and the trace writer's counters."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

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


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; spills and a full queue show here as well as in the log."""
    writer = get_writer()
    lines = []
    for name, value in writer.stats.items():
        lines += [f"# TYPE opentracy_traces_{name}_total counter", f"opentracy_traces_{name}_total {value}"]
    lines += [
        "# TYPE opentracy_traces_spool_files gauge",
        f"opentracy_traces_spool_files {len(writer.pending_spool_files())}",
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")
