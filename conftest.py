"""Test set-up shared by every app: a private chDB path and spool per session, the real ASGI app
served by uvicorn on a loopback port, fake providers, and owner / member / outsider fixtures."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

_tmp = Path(tempfile.mkdtemp(prefix="opentracy-test-"))
if settings.CLICKHOUSE_URL.startswith("chdb://"):
    # chDB allows one process per path: each test session gets its own.
    settings.CLICKHOUSE_URL = f"chdb:///{_tmp / 'chdb'}"
settings.OPENTRACY_TRACE_SPOOL_DIR = _tmp / "spool"
settings.OPENTRACY_TRACE_FLUSH_INTERVAL_S = 0.05
settings.OPENTRACY_TRACE_REPLAY_INTERVAL_S = 0.5
settings.OPENTRACY_UPSTREAM_TIMEOUT_S = 2.0
settings.OPENTRACY_RETRY_BACKOFF_S = 0.01  # retries stay real, without slow waits
settings.OPENTRACY_LOCAL_MODEL_PRELOAD = False
# The learner's 10-minute schedule would fire in the middle of unrelated tests; the beat tests
# start their own beat on a short interval.
settings.OPENTRACY_EMBEDDED_BEAT = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Before a test's database is flushed, the session's worker finishes what the test queued
    (a task left running races the flush, and on Postgres TRUNCATE deadlocks with it)."""
    from opentracy_site.worker import wait_idle

    if not wait_idle(timeout_s=30):
        warnings.warn(f"{item.nodeid} left the worker busy for 30 s; its tables are flushed anyway", stacklevel=1)


@pytest.fixture(scope="session", autouse=True)
def clickhouse_schema() -> None:
    from traces.migrations_ch import apply_migrations

    apply_migrations()


@pytest.fixture(scope="session", autouse=True)
def static_files() -> None:
    """Collected as `make run` does, so pages load their CSS and JS from WhiteNoise as in production."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # Transactional tests flush tables without signals, and SQLite reuses ids: start clean.
    from gateway import cache

    cache.clear_all()
    yield
    cache.clear_all()


@pytest.fixture(scope="session")
def server_url(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """The whole engine (Django + /v1 + lifespan) served by uvicorn on a real socket."""
    import uvicorn

    from opentracy_site.asgi import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    with django_db_blocker.unblock():
        thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(10)
        _drop_other_connections()


def _drop_other_connections() -> None:
    """The server's and the trace writer's threads keep their DB connections open (as in
    production); on Postgres they would block dropping the test database."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[Any]:
    from tests.fakes.openai_upstream import FakeOpenAI

    fake = FakeOpenAI()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[Any]:
    from tests.fakes.anthropic_upstream import FakeAnthropic

    fake = FakeAnthropic()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def people(transactional_db: None) -> dict[str, Any]:
    """An owner and a member of `project`, and an outsider who owns `other_project`."""
    from django.contrib.auth import get_user_model

    from gateway.services import membership_add, project_create

    User = get_user_model()
    owner = User.objects.create_user("owner@example.com", password="pw-owner-123")
    member = User.objects.create_user("member@example.com", password="pw-member-123")
    outsider = User.objects.create_user("outsider@example.com", password="pw-outsider-123")
    project = project_create(slug="acme", name="Acme", owner=owner)
    membership_add(project=project, user=member)
    other = project_create(slug="other", name="Other", owner=outsider)
    return {"owner": owner, "member": member, "outsider": outsider, "project": project, "other_project": other}


@pytest.fixture
def api_key(people: dict[str, Any]) -> str:
    from gateway.services import api_key_create

    return api_key_create(project=people["project"], name="test-app")[1]


@pytest.fixture
def outsider_key(people: dict[str, Any]) -> str:
    from gateway.services import api_key_create

    return api_key_create(project=people["other_project"], name="outsider-app")[1]


FAKE_OPENAI_KEY = "sk-test-fake-openai-key-0123456789"
FAKE_ANTHROPIC_KEY = "sk-ant-test-fake-anthropic-key-0123456789"


@pytest.fixture
def providers(people: dict[str, Any], fake_openai: Any, fake_anthropic: Any) -> dict[str, Any]:
    """Provider credentials stored (encrypted) for `project`, pointing at the fake upstreams."""
    from gateway.services import credential_set

    project = people["project"]
    credential_set(project=project, provider="openai", api_key=FAKE_OPENAI_KEY, base_url=f"{fake_openai.base_url}/v1")
    credential_set(project=project, provider="anthropic", api_key=FAKE_ANTHROPIC_KEY, base_url=fake_anthropic.base_url)
    return {"openai": fake_openai, "anthropic": fake_anthropic}


@pytest.fixture
def client(server_url: str, api_key: str, providers: dict[str, Any]) -> Any:
    """The official OpenAI SDK pointed at the engine."""
    import openai

    return openai.OpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0, timeout=20)


@pytest.fixture
def async_client(server_url: str, api_key: str, providers: dict[str, Any]) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0, timeout=20)


CHROMIUM = "/usr/bin/chromium"  # Debian's package (`apt-get install chromium`); Playwright downloads nothing
# No sandbox (containers), and none of Chromium's own calls home (updates, sync, field trials).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright: browser tests of the dashboard.

    Module-scoped on purpose: while Playwright's sync API is open, this thread has a running event loop,
    which breaks every later test that starts its own (pytest-asyncio, asyncio.run, async_to_sync).
    """
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: `apt-get install -y chromium` (see README, Tests).")
    # Playwright's sync API keeps an event loop running in this thread, which Django's ORM takes for
    # async code; the tests' own ORM calls are plain sync code, so that guard is lifted here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def logged_in_page(chromium: Any, server_url: str, people: dict[str, Any]) -> Iterator[Any]:
    """A browser tab with the project owner's session cookie (logged in the way Django's test client does)."""
    from django.test import Client

    django_client = Client()
    django_client.force_login(people["owner"])
    context = chromium.new_context(base_url=server_url)
    session = django_client.cookies["sessionid"].value
    context.add_cookies([{"name": "sessionid", "value": session, "url": server_url}])
    page = context.new_page()
    yield page
    context.close()
