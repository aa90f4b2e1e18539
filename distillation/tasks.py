"""Celery tasks of a distillation job, chained: prepare (sampling + judging, default queue) →
train (gpu queue: run `celery worker -Q gpu` on the GPU hosts) → evaluate (default queue). They
take the job id, and each phase's status guard (distillation.jobs.run_phase) makes them idempotent:
a job that is not running is skipped, and the chain's later tasks skip a job that failed or was
cancelled. A database error is retried with backoff; the phase resumes where it stopped."""

from __future__ import annotations

from celery import chain, shared_task
from django.db import OperationalError

RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True, "max_retries": 3}


@shared_task(name="distillation.prepare", queue="default", **RETRY)
def prepare(job_id: int) -> str:
    from . import jobs

    return jobs.run_phase(job_id, jobs.prepare, first=True)


@shared_task(name="distillation.train", queue="gpu", **RETRY)
def train(job_id: int) -> str:
    from . import jobs

    return jobs.run_phase(job_id, jobs.train)


@shared_task(name="distillation.evaluate", queue="default", **RETRY)
def evaluate(job_id: int) -> str:
    from . import jobs

    return jobs.run_phase(job_id, jobs.evaluate, last=True)


@shared_task(name="distillation.canary_judge", queue="default", **RETRY)
def canary_judge(canary_id: int) -> dict[str, int]:
    from .canary import canary_judge as judge
    from .models import Canary

    canary = Canary.objects.filter(pk=canary_id).first()
    return judge(canary=canary) if canary else {}


@shared_task(name="distillation.canary_judge_running", queue="default", **RETRY)
def canary_judge_running() -> int:
    """Periodic (CELERY_BEAT_SCHEDULE): judge the new answers of every running canary."""
    from .canary import judge_running

    return judge_running()


def enqueue_job(job_id: int) -> None:
    """Send the job's three tasks as one chain, each to its queue."""
    chain(
        prepare.si(job_id).set(queue="default"),
        train.si(job_id).set(queue="gpu"),
        evaluate.si(job_id).set(queue="default"),
    ).delay()
