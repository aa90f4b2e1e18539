"""The Celery app. Embedded mode: memory broker, worker inside the server (see worker.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")

app = Celery("opentracy_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="opentracy_site.ping")
def ping() -> str:
    """Answered by whichever worker consumes the default queue; readiness and tests use it."""
    return "pong"
