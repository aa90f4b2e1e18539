from django.core.management.base import BaseCommand

from traces.migrations_ch import apply_migrations


class Command(BaseCommand):
    help = "Apply the numbered ClickHouse migrations (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        applied = apply_migrations()
        if applied:
            for name in applied:
                self.stdout.write(f"  Applied {name}")
        else:
            self.stdout.write("  ClickHouse schema is up to date.")
