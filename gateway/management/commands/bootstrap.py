import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from gateway.models import Project
from gateway.services import membership_add, project_create

DEFAULT_SLUG = "default"


class Command(BaseCommand):
    help = "Create the default project and an admin account if they are missing (idempotent)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=DEFAULT_SLUG).first() or project_create(slug=DEFAULT_SLUG, name="Default")
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        email = os.environ.get("OPENTRACY_ADMIN_EMAIL") or "admin@localhost"
        password = os.environ.get("OPENTRACY_ADMIN_PASSWORD")
        generated = not password
        password = password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=email, email=email, password=password)
        membership_add(project=project, user=user, role="owner")
        self.stdout.write(f"Created admin account {email} in project '{DEFAULT_SLUG}'.")
        if generated:
            self.stdout.write(f"  Generated password (shown once): {password}")
