from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.models import Project
from gateway.services import api_key_create


class Command(BaseCommand):
    help = "Create an engine API key for a project and print it (it is shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--name", required=True, help="a name to recognise the key by")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        _key, raw = api_key_create(project=project, name=options["name"])
        self.stdout.write(raw)
