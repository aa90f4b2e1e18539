"""Long jobs a restart interrupted, put right when the embedded engine starts.

In the embedded mode the Celery worker and its in-memory broker live in the server process, so
when the server starts nothing can still be running and every queued task message is gone. Left
alone, those rows would say "running" or "queued" forever (and block the pages' Start buttons):
- queued ones are queued again (their task message died with the broker);
- running ones end as failed with a reason that says what to do (clustering runs, distillation
  jobs, which resume from what they kept when started again, profile runs); judge runs, which
  resume where they stopped (verdicts already written are kept), are queued again instead.

The distributed mode keeps queued messages in Redis, and a worker restart does not mean the other
workers' jobs died, so this runs only for the embedded worker.
"""

from __future__ import annotations

import logging

from django.utils import timezone

log = logging.getLogger(__name__)


def recover_interrupted() -> dict[str, list[int]]:
    """Fail or re-queue what a restart interrupted; returns the ids touched, by outcome."""
    from datasets import judge
    from datasets.models import ClusteringRun, JudgeRun
    from datasets.tasks import cluster_run
    from distillation import services as distillation
    from distillation.models import DistillationJob
    from routing import profile_runs
    from routing.models import ProfileRun

    now = timezone.now()
    done: dict[str, list[int]] = {"failed": [], "requeued": []}

    for run in ClusteringRun.objects.filter(status=ClusteringRun.Status.RUNNING):
        run.status, run.finished_at = ClusteringRun.Status.FAILED, now
        run.message = f"Interrupted: the engine restarted during {run.phase or 'start-up'}. Start a new run."
        run.save(update_fields=["status", "finished_at", "message"])
        done["failed"].append(run.pk)
    for run_id in ClusteringRun.objects.filter(status=ClusteringRun.Status.QUEUED).values_list("pk", flat=True):
        cluster_run.delay(run_id)
        done["requeued"].append(run_id)

    unfinished = [JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING]
    for judge_id in JudgeRun.objects.filter(status__in=unfinished).values_list("pk", flat=True):
        judge._enqueue(judge_id)
        done["requeued"].append(judge_id)

    for job in DistillationJob.objects.filter(status=DistillationJob.Status.RUNNING):
        job.status, job.finished_at = DistillationJob.Status.FAILED, now
        job.message = (
            f"Interrupted: the engine restarted during {job.phase or 'start-up'}. Start the job again to resume: "
            "teacher samples, verdicts and training checkpoints are kept."
        )
        job.save(update_fields=["status", "finished_at", "message"])
        done["failed"].append(job.pk)
    for job_id in DistillationJob.objects.filter(status=DistillationJob.Status.QUEUED).values_list("pk", flat=True):
        distillation._enqueue(job_id)
        done["requeued"].append(job_id)

    for profile in ProfileRun.objects.filter(status=ProfileRun.Status.RUNNING):
        profile.status, profile.finished_at = ProfileRun.Status.FAILED, now
        profile.message = "Interrupted: the engine restarted. What it measured is kept; start a new run for the rest."
        profile.save(update_fields=["status", "finished_at", "message"])
        done["failed"].append(profile.pk)
    for profile_id in ProfileRun.objects.filter(status=ProfileRun.Status.QUEUED).values_list("pk", flat=True):
        profile_runs._enqueue(profile_id)
        done["requeued"].append(profile_id)

    if done["failed"] or done["requeued"]:
        log.warning("after a restart: %d interrupted jobs failed, %d queued again", *map(len, done.values()))
    return done
