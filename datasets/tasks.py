"""Celery tasks of the datasets app (default queue). They take ids, fetch, call a service, and are
idempotent: a run that is not queued is skipped (the service's status guard), and new-trace
assignment only reads traces newer than the run's assigned_until."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from opentracy_site import heartbeat

from .models import ClusteringRun


@shared_task(name="datasets.cluster_run", autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def cluster_run(run_id: int) -> str:
    """Run a queued clustering run to its end; returns its final status ('skipped' when not queued)."""
    from .runs import run_execute

    with heartbeat.watched("clustering", run_id):  # recovery.sweep_dead fails it if this process dies
        run = run_execute(run_id=run_id)
    return run.status if run is not None else "skipped"


@shared_task(name="datasets.cluster_assign_new", autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def cluster_assign_new(run_id: int) -> dict[str, int]:
    """Place the traces that arrived since a finished run in its clusters (skipped unless done)."""
    from .cluster_edits import assign_new

    run = ClusteringRun.objects.filter(pk=run_id, status=ClusteringRun.Status.DONE).first()
    if run is None:
        return {"skipped": 1}
    return assign_new(run=run)


@shared_task(name="datasets.judge_run", autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def judge_run(judge_run_id: int) -> str:
    """Judge a queued judge run's rows (resumable: rows this judge version already judged are
    skipped); returns its final status ('skipped' when it is gone or already finished)."""
    from .judge import judge_run_execute, judge_run_fail
    from .models import JudgeRun

    run = JudgeRun.objects.filter(pk=judge_run_id).first()
    if run is None or run.status not in (JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING):
        return "skipped"
    try:
        with heartbeat.watched("judge", judge_run_id):  # recovery.sweep_dead queues it again if this process dies
            return str(judge_run_execute(run=run).status)
    except OperationalError:
        raise  # retried with backoff; the run resumes where it stopped
    except Exception as exc:
        judge_run_fail(run_id=judge_run_id, message=f"{type(exc).__name__}: {exc}")
        raise
