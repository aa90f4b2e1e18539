"""A distillation job whose worker dies does not stay "running": a separate process beats for it
(as a Celery worker's phase does) and is killed with SIGKILL, and the periodic sweep then fails the
job with a reason that says how to resume. A job between phases (handed over to the next queue) and
one whose worker is alive are left alone. The heartbeats go through a real Redis, as in the
distributed mode, whichever mode the suite runs in."""

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

from distillation import jobs
from distillation.models import DistillationJob
from opentracy_site import heartbeat

from .job_support import frozen_version

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/9"
TTL_S = 1
WORKER = """
import sys, time
from opentracy_site import heartbeat
with heartbeat.beating("distillation", int(sys.argv[1])):
    print("beating", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def shared_heartbeats(settings: Any) -> None:
    settings.REDIS_URL = REDIS
    settings.OPENTRACY_JOB_HEARTBEAT_S = TTL_S


def running_job(people: dict[str, Any], **fields: Any) -> DistillationJob:
    values = {
        "status": DistillationJob.Status.RUNNING,
        "phase": "training",
        "started_at": timezone.now() - timedelta(seconds=30),
    }
    return DistillationJob.objects.create(
        project=people["project"], dataset_version=frozen_version(people, rows=2), teacher="openai/gpt-4o",
        student="smollm2-135m-instruct", **{**values, **fields},
    )  # fmt: skip


def sweep_for(seconds: float) -> list[int]:
    failed: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        failed += jobs.sweep_dead()
        time.sleep(0.2)
    return failed


def test_a_killed_worker_fails_its_job_and_a_live_one_keeps_it(people: dict[str, Any], shared_heartbeats: None) -> None:
    job = running_job(people)
    env = {**os.environ, "REDIS_URL": REDIS, "OPENTRACY_JOB_HEARTBEAT_S": str(TTL_S),
           "DJANGO_SETTINGS_MODULE": "opentracy_site.settings"}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(job.pk)],
        env=env,
        cwd=Path(settings.BASE_DIR),
        stdout=subprocess.PIPE,
        text=True,
    )
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
    assert "stopped answering during training" in job.message and "Start the job again to resume" in job.message


def test_phases_hand_over_and_a_finished_job_is_forgotten(people: dict[str, Any], shared_heartbeats: None) -> None:
    job = running_job(people, status=DistillationJob.Status.QUEUED, started_at=None)
    assert jobs.run_phase(job.pk, lambda job: None, first=True) == "running"  # e.g. prepare done, train queued on `gpu`
    DistillationJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=30))
    assert sweep_for(2 * TTL_S) == []  # waiting for the next phase's worker is not death
    assert not heartbeat.is_dead("distillation", job.pk)
    assert jobs.run_phase(job.pk, lambda job: None, last=True) == "done"
    assert heartbeat.is_dead("distillation", job.pk)  # nothing left to watch
    assert DistillationJob.objects.get(pk=job.pk).status == DistillationJob.Status.DONE

    stale = running_job(people, phase="evaluating")  # e.g. running before heartbeats existed, worker gone
    assert jobs.sweep_dead() == [stale.pk]
    assert "during evaluating" in DistillationJob.objects.get(pk=stale.pk).message


def test_the_sweep_is_scheduled() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["distillation.sweep_dead_jobs"]
    assert entry["task"] == "distillation.sweep_dead_jobs"
    assert entry["schedule"] == settings.OPENTRACY_JOB_HEARTBEAT_S / 2 == 60
