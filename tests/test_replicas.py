"""Two web replicas against one Postgres and one Redis (the distributed mode's shape): an alias
re-pointed through one replica, a key's limit changed and a key revoked by a third process (an
admin's shell) take effect on every replica within a second, though each caches them for minutes;
the rate limit is one budget across replicas.

Each replica is a real `uvicorn opentracy_site.asgi:application` process with its own var/ (chDB
allows one process per path); the database is a fresh Postgres database made for this test, Redis
a database of its own, so the test runs the same whichever mode the rest of the suite uses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/8"
PROPAGATION_S = 1.0
SETUP = """
from gateway.services import alias_set, api_key_create, project_create
project = project_create(slug="acme", name="Acme")
_key, raw = api_key_create(project=project, name="app")
alias_set(project=project, name="smart", target="openai/model-a", changed_by="test")
print(raw)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.fakes.openai_upstream import FakeOpenAI

    name = f"opentracy_replicas_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS).flushdb()
    fake = FakeOpenAI()
    fake.start()
    home = tmp_path_factory.mktemp("replicas")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "CLICKHOUSE"))}
    base.update(
        DATABASE_URL=f"{PG}/{name}",
        REDIS_URL=REDIS,
        OPENAI_API_KEY="sk-fake-replicas",
        OPENAI_BASE_URL=f"{fake.base_url}/v1",
        OPENTRACY_CACHE_TTL_S="600",  # only the invalidation can explain a change within a second
        OPENTRACY_EMBEDDED_WORKER="false",
        OPENTRACY_LOCAL_MODEL_PRELOAD="false",
        SECRET_KEY="replicas-test-secret",
    )
    base.pop("DJANGO_SETTINGS_MODULE", None)

    def env(replica: str) -> dict[str, str]:
        return {**base, "OPENTRACY_VAR_DIR": str(home / replica)}

    def manage(*args: str, replica: str = "admin") -> str:
        command = [sys.executable, "manage.py", *args]
        done = subprocess.run(command, cwd=ROOT, env=env(replica), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "--noinput", "-v", "0")
    key = manage("shell", "-c", SETUP).strip().splitlines()[-1]
    servers, urls = [], []
    try:
        for replica in ("a", "b"):
            migrated = manage("migrate_clickhouse", replica=replica)
            assert "  Applying m0008_text_index...\n" in migrated and "  Applied " in migrated  # named as it starts
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", "opentracy_site.asgi:application", "--port", str(port)]
            servers.append(subprocess.Popen(command, cwd=ROOT, env=env(replica), stderr=subprocess.PIPE, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        for url, server in zip(urls, servers, strict=True):
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "replica did not start"
                time.sleep(0.2)
        yield {"urls": urls, "key": key, "manage": manage, "fake": fake}
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        fake.stop()
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def chat(url: str, key: str, model: str = "smart") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def within(seconds: float, check: Callable[[], bool]) -> float:
    """How long `check` took to become true (fails after `seconds`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_changes_reach_every_replica_within_a_second(cluster: dict[str, Any]) -> None:
    a, b = cluster["urls"]
    key = cluster["key"]
    for url in (a, b):  # both replicas cache the key and the alias
        answer = chat(url, key)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-opentracy-model"] == "openai/model-a"

    # An alias re-pointed through replica A's API...
    put = httpx.put(
        f"{a}/api/aliases/smart", json={"target": "openai/model-b"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert put.status_code == 200, put.text
    # ...is what replica B resolves, at once.
    within(PROPAGATION_S, lambda: chat(b, key).headers.get("x-opentracy-model") == "openai/model-b")

    # A limit set from a third process (an admin's shell) is one budget over both replicas.
    limit = "from gateway.models import ApiKey\nfor k in ApiKey.objects.all():\n    k.rpm_limit = 4\n    k.save()"
    cluster["manage"]("shell", "-c", limit)
    time.sleep(PROPAGATION_S)
    statuses = [chat(url, key).status_code for url in (a, b, a, b, a, b)]
    assert statuses.count(200) <= 4 and statuses[-1] == 429, statuses

    # A key revoked elsewhere stops working on both replicas.
    cluster["manage"](
        "shell",
        "-c",
        "from gateway.models import ApiKey; from gateway.services import api_key_revoke;"
        " [api_key_revoke(api_key=k) for k in ApiKey.objects.all()]",
    )
    for url in (a, b):
        within(PROPAGATION_S, lambda url=url: chat(url, key).status_code == 401)  # type: ignore[misc]
