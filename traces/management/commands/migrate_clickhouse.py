import time

from django.core.management.base import BaseCommand

from traces.migrations_ch import apply_migrations


class Command(BaseCommand):
    help = "Apply the numbered ClickHouse migrations (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        t0 = time.monotonic()

        def starting(name: str) -> None:  # shown as it starts: a migration may copy a large table
            self.stdout.write(f"  Applying {name}...")
            self.stdout.flush()

        applied = apply_migrations(starting)
        if applied:
            self.stdout.write(f"  Applied {len(applied)} migration(s) in {time.monotonic() - t0:.1f} s")
        else:
            self.stdout.write("  ClickHouse schema is up to date.")
