"""Long jobs whose worker is gone, put right: none may say "running" or "queued" forever (and
block the pages' Start buttons). The kinds of long job are listed once here (KINDS).

- `recover_interrupted`, when the embedded engine starts. Its Celery worker and in-memory broker
  live in the server process, so nothing can still be running and every queued task message is
  gone: queued jobs are queued again; running ones are failed with a reason that says what to do,
  except judge runs, which resume where they stopped (verdicts already written are kept) and are
  queued again. The distributed mode keeps queued messages in Redis, and a worker restart does
  not mean the other workers' jobs died, so this runs only for the embedded worker.
- `sweep_dead`, periodic (Celery beat, `opentracy_site.sweep_dead_jobs`), in every mode: a running
  job whose worker stopped beating (opentracy_site/heartbeat.py: killed, out of memory, its host
  lost) is treated the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from . import heartbeat
from . import progress as job_progress

log = logging.getLogger(__name__)
RESTARTED = "the engine restarted"
DIED = "its worker stopped answering (killed, out of memory or its host lost)"


@dataclass(frozen=True)
class Kind:
    name: str  # of progress events and heartbeats
    model: Any
    enqueue: Callable[[int], None]  # send the job's task (again)
    resumes: bool  # a running job that lost its worker is queued again (else failed)
    advice: str = ""  # after "Interrupted: <cause> during <phase>." on a failed one
    since: str = "started_at"  # the field a running job's age is read from


def kinds() -> list[Kind]:
    from datasets import judge
    from datasets.models import ClusteringRun, JudgeRun
    from datasets.tasks import cluster_run
    from distillation import services as distillation
    from distillation.models import DistillationJob
    from routing import profile_runs
    from routing.models import ProfileRun

    return [
        Kind("clustering", ClusteringRun, cluster_run.delay, False, "Start a new run."),
        Kind("judge", JudgeRun, judge._enqueue, True, since="created_at"),
        Kind("distillation", DistillationJob, distillation._enqueue, False,
             "Start the job again to resume: teacher samples, verdicts and training checkpoints are kept."),
        Kind("profile", ProfileRun, profile_runs._enqueue, False,
             "What it measured is kept; start a new run for the rest."),
    ]  # fmt: skip


def _fail(kind: Kind, row: Any, cause: str) -> bool:
    phase = getattr(row, "phase", None)  # profile runs have none
    where = f" during {phase or 'start-up'}" if phase is not None else ""
    message = f"Interrupted: {cause}{where}. {kind.advice}"
    failed = kind.model.objects.filter(pk=row.pk, status="running").update(
        status="failed", finished_at=timezone.now(), message=message[:4000]
    )
    if failed:
        heartbeat.forget(kind.name, row.pk)
        job_progress.publish(kind.name, row.pk, status="failed", message=message)
    return bool(failed)


def _resume(kind: Kind, pk: int) -> None:
    heartbeat.hand_over(kind.name, pk)  # queued again: a worker will pick it up, the sweep waits
    kind.enqueue(pk)


def _put_right(kind: Kind, row: Any, cause: str, done: dict[str, list[int]]) -> None:
    if kind.resumes:
        _resume(kind, row.pk)
        done["requeued"].append(row.pk)
    elif _fail(kind, row, cause):
        done["failed"].append(row.pk)


def recover_interrupted() -> dict[str, list[int]]:
    """Fail or re-queue what a restart interrupted; returns the ids touched, by outcome."""
    done: dict[str, list[int]] = {"failed": [], "requeued": []}
    for kind in kinds():
        for row in kind.model.objects.filter(status="running"):
            _put_right(kind, row, RESTARTED, done)
        for pk in kind.model.objects.filter(status="queued").values_list("pk", flat=True):
            kind.enqueue(pk)
            done["requeued"].append(pk)
    if done["failed"] or done["requeued"]:
        log.warning("after a restart: %d interrupted jobs failed, %d queued again", *map(len, done.values()))
    return done


def sweep_dead() -> dict[str, list[int]]:
    """Fail (or queue again, for the kinds that resume) the running jobs whose worker stopped
    beating; a job younger than one heartbeat period is left to start."""
    done: dict[str, list[int]] = {"failed": [], "requeued": []}
    young = timezone.now() - timedelta(seconds=settings.OPENTRACY_JOB_HEARTBEAT_S)
    for kind in kinds():
        for row in kind.model.objects.filter(status="running", **{f"{kind.since}__lt": young}):
            if heartbeat.is_dead(kind.name, row.pk):
                _put_right(kind, row, DIED, done)
    if done["failed"] or done["requeued"]:
        log.warning("jobs whose worker stopped beating: %s", done)
    return done
