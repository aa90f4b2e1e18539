"""After a restart of the embedded engine (worker and in-memory broker inside the server), jobs it
interrupted do not stay "running" forever: they fail with a reason that says what to do, or are
queued again when they resume by themselves (opentracy_site/recovery.py, run at start-up)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from datasets.models import ClusteringRun, JudgeRun
from distillation.models import DistillationJob
from distillation.tests.job_support import frozen_version
from opentracy_site.recovery import recover_interrupted
from routing.models import ProfileRun, RoutingPolicy

pytestmark = pytest.mark.django_db(transaction=True)


def test_interrupted_jobs_fail_with_a_reason_and_resumable_ones_are_queued_again(people: dict[str, Any]) -> None:
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()  # what is queued again runs (and must end) before the test's tables go
    project = people["project"]
    version = frozen_version(people, rows=3)
    running = ClusteringRun.objects.create(project=project, status=ClusteringRun.Status.RUNNING, phase="embedding")
    queued = ClusteringRun.objects.create(project=project, status=ClusteringRun.Status.QUEUED, cancel_requested=True)
    done = ClusteringRun.objects.create(project=project, status=ClusteringRun.Status.DONE)
    judge = JudgeRun.objects.create(
        version=version, kind="exact", judge="exact", status=JudgeRun.Status.RUNNING, cancel_requested=True
    )
    job = DistillationJob.objects.create(
        project=project,
        dataset_version=version,
        teacher="openai/gpt-4o",
        student="smollm2-135m",
        status=DistillationJob.Status.RUNNING,
        phase="training",
    )
    policy = RoutingPolicy.objects.create(project=project, name="p", candidates=["openai/gpt-4o"])
    profile = ProfileRun.objects.create(policy=policy, judge="openai/gpt-4o", status=ProfileRun.Status.RUNNING)

    touched = recover_interrupted()

    assert sorted(touched["failed"]) == sorted([running.pk, job.pk, profile.pk])
    assert sorted(touched["requeued"]) == sorted([queued.pk, judge.pk])
    running.refresh_from_db()
    assert running.status == "failed" and running.finished_at is not None
    assert running.message == "Interrupted: the engine restarted during embedding. Start a new run."
    job.refresh_from_db()
    assert job.status == "failed" and "during training" in job.message and "Start the job again" in job.message
    profile.refresh_from_db()
    assert profile.status == "failed" and profile.message.startswith("Interrupted")
    done.refresh_from_db()
    assert done.status == "done" and not done.message  # finished work is left alone
    # What was queued again runs on the worker: both were asked to cancel, so both end at once.
    deadline = time.monotonic() + 60
    for row in (queued, judge):
        row.refresh_from_db()
        while row.status not in ("cancelled", "failed", "done"):
            assert time.monotonic() < deadline, f"{row} never finished"
            time.sleep(0.1)
            row.refresh_from_db()
    # Now nothing is left to put right, and nothing is failed twice.
    assert recover_interrupted() == {"failed": [], "requeued": []}
