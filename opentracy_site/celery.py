"""The Celery app. Embedded mode: memory broker, worker inside the server (see worker.py)."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")

app = Celery("opentracy_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="opentracy_site.ping")
def ping() -> str:
    """Answered by whichever worker consumes the default queue; readiness and tests use it."""
    return "pong"


@app.task(name="opentracy_site.sweep_dead_jobs")
def sweep_dead_jobs() -> dict[str, list[int]]:
    """Periodic (CELERY_BEAT_SCHEDULE): put right the long jobs whose worker died (recovery.py)."""
    from opentracy_site.recovery import sweep_dead

    return sweep_dead()


@worker_init.connect
def _listen_for_invalidations(**kwargs: object) -> None:
    """Workers call the engine in-process (judging, naming, profile runs): their caches follow
    the servers' changes too."""
    from opentracy_site import invalidation

    invalidation.start_listener()
