"""Celery tasks of the routing app (default queue). They take ids, fetch, call a service.

- learn_all: every OPENTRACY_ROUTER_LEARN_INTERVAL_S (CELERY_BEAT_SCHEDULE; `celery beat` in
  distributed mode, a beat thread beside the embedded worker otherwise). Idempotent: it recomputes.
- profile_run: status guard (only a queued run starts). Not retried: outcomes are added prompt by
  prompt, so a second pass would count them twice; a failure is recorded on the run instead.
- student_join: idempotent (the candidate is added once, its cells replaced).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import OperationalError

from opentracy_site import heartbeat

RETRY: dict[str, Any] = {"autoretry_for": (OperationalError,), "retry_backoff": True, "max_retries": 3}


@shared_task(name="routing.learn_all", queue="default", **RETRY)
def learn_all() -> dict[str, dict[str, Any]]:
    """Recompute every policy's TRACES cells from its judged traffic; returns counts per policy id."""
    from .learning import learn_all as run

    return run()


@shared_task(name="routing.profile_run", queue="default")
def profile_run(run_id: int) -> str:
    """Run a queued profile run; returns its final status ('skipped' when it was not queued)."""
    from .profile_runs import execute, profile_run_fail

    try:
        with heartbeat.watched("profile", run_id):  # recovery.sweep_dead fails it if this process dies
            run = execute(run_id=run_id)
    except Exception as exc:
        profile_run_fail(run_id=run_id, message=f"{type(exc).__name__}: {exc}")
        raise
    return run.status if run is not None else "skipped"


@shared_task(name="routing.student_join", queue="default", **RETRY)
def student_join(student_id: int) -> list[int]:
    """An approved student joins the policies that route to its teacher; returns their ids."""
    from distillation.models import Student

    from .learning import student_join as join

    student = Student.objects.select_related("job__project").filter(pk=student_id).first()
    return join(student=student) if student is not None else []
