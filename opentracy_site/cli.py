"""The `opentracy` command (installed by `pip install .`): the engine's processes without a source
checkout or a Makefile.

    opentracy serve [--host H] [--port P]   migrate, then the embedded engine (as `make run`)
    opentracy worker [--queue default|gpu]  a Celery worker (distributed mode)
    opentracy beat                          the periodic schedule (distributed mode: exactly one)
    opentracy migrate                       Django and ClickHouse migrations
    opentracy create-api-key --project P --name N
    opentracy manage <command> ...          any manage.py command
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("migrate_clickhouse")


def serve(host: str, port: int) -> None:
    from django.core.management import call_command

    migrate()
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("bootstrap")
    import uvicorn

    uvicorn.run(
        "opentracy_site.asgi:application",
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
    )


def celery(args: list[str]) -> None:
    from opentracy_site.celery import app

    app.start(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opentracy", description="The OpenTracy engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="migrate, then serve the embedded engine (pages, API, /v1)")
    run.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    worker = commands.add_parser("worker", help="a Celery worker (distributed mode)")
    worker.add_argument("--queue", choices=["default", "gpu"], default="default")
    worker.add_argument("--concurrency", type=int, default=None)
    commands.add_parser("beat", help="the periodic schedule (run exactly one)")
    commands.add_parser("migrate", help="apply Django and ClickHouse migrations")
    key = commands.add_parser("create-api-key", help="create an API key (printed once)")
    key.add_argument("--project", required=True, help="project slug")
    key.add_argument("--name", required=True, help="a name to recognise the key by")
    manage = commands.add_parser("manage", help="any manage.py command")
    manage.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _django()
    if args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "worker":
        # Training holds one GPU: one job at a time; the default queue's tasks are I/O-bound.
        concurrency = args.concurrency or (1 if args.queue == "gpu" else 4)
        pool = ["--pool", "threads"] if args.queue == "default" else []
        celery(["worker", "-Q", args.queue, f"--concurrency={concurrency}", *pool])
    elif args.command == "beat":
        celery(["beat"])
    elif args.command == "migrate":
        migrate()
    elif args.command == "create-api-key":
        from django.core.management import call_command

        call_command("create_api_key", project=args.project, name=args.name)
    else:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["opentracy manage", *args.args])


if __name__ == "__main__":
    main(sys.argv[1:])
