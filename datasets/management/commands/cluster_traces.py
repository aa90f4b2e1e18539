"""`manage.py cluster_traces --project <slug> [--since 7d] [--namer namer] [--model m] [--alias a]`:
start a clustering run of a project's traces, e.g. nightly from cron.

With a shared broker (distributed mode, REDIS_URL) the run is queued for the workers and the
command returns at once (add --wait to follow it). In embedded mode the broker lives in the server
process, so the command runs the clustering itself and needs the server stopped (chDB opens in one
process only); with the server running, schedule `POST /api/clustering/runs` instead (docs/datasets.md).
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from datasets.models import ClusteringRun
from datasets.runs import run_create, run_execute
from gateway.models import Project
from traces.filters import ALL_TIME, RANGES


class Command(BaseCommand):
    help = "Start clustering a project's traces by intent (queued for the workers, or run here in embedded mode)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument(
            "--since", default="7d", help=f"{', '.join(RANGES)}, {ALL_TIME}, or an ISO 8601 date-time (default 7d)"
        )
        parser.add_argument("--model", default="", help="only traces of this model")
        parser.add_argument("--alias", default="", help="only traces sent to this alias")
        parser.add_argument("--namer", default="namer", help="the alias that names clusters ('' for keyword names)")
        parser.add_argument("--wait", action="store_true", help="with a shared broker, wait for the run to finish")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        since = options["since"]
        filters = {"range": since} if since in RANGES or since == ALL_TIME else {"since": since}
        filters.update({k: options[k] for k in ("model", "alias") if options[k]})
        try:
            run = run_create(project=project, user=None, filters=filters, params={"namer": options["namer"]})
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        self.stdout.write(f"Clustering run {run.pk} queued for project {project.slug}.")
        if str(settings.CELERY_BROKER_URL).startswith("memory://"):
            run_execute(run_id=run.pk)  # no worker shares this process's in-memory broker: run it here
        elif not options["wait"]:
            return
        while True:
            run.refresh_from_db()
            if run.finished:
                break
            time.sleep(1)
        self.stdout.write(f"Run {run.pk} {run.status}: {run.message}")
        if run.status != ClusteringRun.Status.DONE:
            raise CommandError(f"run {run.pk} {run.status}")
