"""A long job whose worker dies does not stay "running": a separate process beats for a job (as a
Celery worker's task does) and is killed with SIGKILL, and the periodic sweep then fails the job
with a reason that says how to resume. A distillation job between phases (handed over to the next
queue) and one whose worker is alive are left alone; every kind of long job is covered, and the
kinds that resume by themselves (judge runs) are queued again instead. The heartbeats go through
a real Redis, as in the distributed mode, whichever mode the suite runs in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from datasets.models import ClusteringRun, JudgeRun
from distillation import jobs
from distillation.models import DistillationJob
from distillation.tests.job_support import frozen_version
from opentracy_site import heartbeat
from opentracy_site.recovery import sweep_dead
from routing.models import ProfileRun, RoutingPolicy

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/9"
TTL_S = 1
AGO = timezone.now() - timedelta(seconds=30)
WORKER = """
import sys, time
from opentracy_site import heartbeat
with heartbeat.watched("distillation", int(sys.argv[1])):
    print("beating", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def shared_heartbeats(settings: Any) -> None:
    settings.REDIS_URL = REDIS
    settings.OPENTRACY_JOB_HEARTBEAT_S = TTL_S


def distillation_job(people: dict[str, Any], **fields: Any) -> DistillationJob:
    values = {"status": DistillationJob.Status.RUNNING, "phase": "training", "started_at": AGO, **fields}
    version = frozen_version(people, rows=2)
    return DistillationJob.objects.create(
        project=people["project"], dataset_version=version, teacher="openai/gpt-4o", student="smollm2-135m", **values
    )


def sweep_for(seconds: float) -> list[int]:
    failed: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        failed += sweep_dead()["failed"]
        time.sleep(0.2)
    return failed


def test_a_killed_worker_fails_its_job_and_a_live_one_keeps_it(people: dict[str, Any], shared_heartbeats: None) -> None:
    job = distillation_job(people)
    env = {**os.environ, "REDIS_URL": REDIS, "OPENTRACY_JOB_HEARTBEAT_S": str(TTL_S),
           "DJANGO_SETTINGS_MODULE": "opentracy_site.settings"}  # fmt: skip
    command = [sys.executable, "-c", WORKER, str(job.pk)]
    worker = subprocess.Popen(command, env=env, cwd=Path(settings.BASE_DIR), stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "beating"
        assert sweep_for(3 * TTL_S) == []  # alive: beats every TTL/4
        job.refresh_from_db()
        assert job.status == DistillationJob.Status.RUNNING
        worker.send_signal(signal.SIGKILL)  # no clean-up runs: the heartbeat just stops
        worker.wait(timeout=10)
        assert sweep_for(3 * TTL_S) == [job.pk]
    finally:
        worker.kill()
    job.refresh_from_db()
    assert job.status == DistillationJob.Status.FAILED and job.finished_at is not None
    assert job.message.startswith("Interrupted: its worker stopped answering (killed, out of memory or its host lost)")
    assert "during training. Start the job again to resume" in job.message


def test_phases_hand_over_and_a_finished_job_is_forgotten(people: dict[str, Any], shared_heartbeats: None) -> None:
    job = distillation_job(people, status=DistillationJob.Status.QUEUED, started_at=None)
    assert jobs.run_phase(job.pk, lambda job: None, first=True) == "running"  # e.g. prepare done, train queued on `gpu`
    DistillationJob.objects.filter(pk=job.pk).update(started_at=AGO)
    assert sweep_for(2 * TTL_S) == []  # waiting for the next phase's worker is not death
    assert jobs.run_phase(job.pk, lambda job: None, last=True) == "done"
    assert heartbeat.is_dead("distillation", job.pk)  # nothing left to watch
    assert DistillationJob.objects.get(pk=job.pk).status == DistillationJob.Status.DONE


def test_every_kind_of_long_job_is_swept(people: dict[str, Any], shared_heartbeats: None) -> None:
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()  # the judge run queued again runs (and must end) before the test's tables go
    project, version = people["project"], frozen_version(people, rows=2)
    clustering = ClusteringRun.objects.create(project=project, status="running", phase="embedding", started_at=AGO)
    young = ClusteringRun.objects.create(project=project, status="running", started_at=timezone.now())
    judge = JudgeRun.objects.create(version=version, kind="exact", judge="exact", status="running")
    JudgeRun.objects.filter(pk=judge.pk).update(created_at=AGO)
    policy = RoutingPolicy.objects.create(project=project, name="p", candidates=["openai/gpt-4o"])
    profile = ProfileRun.objects.create(policy=policy, status="running", judge="judge", started_at=AGO)
    stale = distillation_job(people, phase="evaluating")  # e.g. running before heartbeats existed

    done = sweep_dead()
    assert sorted(done["failed"]) == sorted([clustering.pk, profile.pk, stale.pk])
    assert done["requeued"] == [judge.pk]  # judge runs resume where they stopped
    clustering.refresh_from_db()
    assert clustering.message == (
        "Interrupted: its worker stopped answering (killed, out of memory or its host lost) during embedding. "
        "Start a new run."
    )
    assert ProfileRun.objects.get(pk=profile.pk).message.endswith(
        "What it measured is kept; start a new run for the rest."
    )
    assert "during evaluating" in DistillationJob.objects.get(pk=stale.pk).message
    assert ClusteringRun.objects.get(pk=young.pk).status == "running"  # younger than a heartbeat period
    assert sweep_dead() == {"failed": [], "requeued": []}  # the queued-again judge run waits for its worker
    deadline = time.monotonic() + 30
    while JudgeRun.objects.get(pk=judge.pk).status == "running":
        assert time.monotonic() < deadline, "the judge run queued again never ended"
        time.sleep(0.2)


def test_the_sweep_is_scheduled() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["opentracy_site.sweep_dead_jobs"]
    assert entry["task"] == "opentracy_site.sweep_dead_jobs"
    assert entry["schedule"] == settings.OPENTRACY_JOB_HEARTBEAT_S / 2 == 60
