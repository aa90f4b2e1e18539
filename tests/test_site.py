"""Health, readiness, the login-protected dashboard, the management commands and the embedded
worker."""

from __future__ import annotations

from io import StringIO
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.test import Client

from gateway.keys import hash_key
from gateway.models import ApiKey, Project

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_and_readyz(server_url: str) -> None:
    assert httpx.get(f"{server_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "clickhouse": "ok", "broker": "ok"}


def test_dashboard_requires_login(people: dict[str, Any]) -> None:
    browser = Client()
    assert browser.get("/").status_code == 302
    browser.force_login(people["member"])
    page = browser.get("/")
    assert page.status_code == 200 and b"acme" in page.content and b"other" not in page.content


def test_a_member_who_is_not_staff_logs_in_and_out(people: dict[str, Any]) -> None:
    browser = Client()
    to_login = browser.get("/projects/acme/traces")
    assert to_login.status_code == 302 and to_login["Location"] == "/accounts/login/?next=/projects/acme/traces"
    wrong = browser.post("/accounts/login/", {"username": "member@example.com", "password": "nope"})
    assert wrong.status_code == 200 and b"correct username and password" in wrong.content
    assert browser.get("/").status_code == 302  # still logged out
    ok = browser.post(
        "/accounts/login/",
        {"username": "member@example.com", "password": "pw-member-123", "next": "/projects/acme/traces"},
    )
    assert ok.status_code == 302 and ok["Location"] == "/projects/acme/traces"
    page = browser.get("/")
    assert page.status_code == 200 and b"Log out" in page.content and b'href="/admin/"' not in page.content
    assert browser.post("/accounts/logout/")["Location"] == "/accounts/login/"
    assert browser.get("/").status_code == 302


def test_bootstrap_is_idempotent_and_create_api_key_prints_a_working_key(
    monkeypatch: pytest.MonkeyPatch, server_url: str
) -> None:
    monkeypatch.setenv("OPENTRACY_ADMIN_EMAIL", "boss@example.com")
    monkeypatch.setenv("OPENTRACY_ADMIN_PASSWORD", "a-long-password")
    out = StringIO()
    call_command("bootstrap", stdout=out)
    call_command("bootstrap", stdout=out)
    assert Project.objects.filter(slug="default").count() == 1
    assert out.getvalue().count("Created admin account boss@example.com") == 1
    assert "Generated password" not in out.getvalue()

    out = StringIO()
    call_command("create_api_key", project="default", name="cli", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("ot-") and ApiKey.objects.get(key_hash=hash_key(raw)).name == "cli"
    resp = httpx.get(f"{server_url}/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert resp.status_code == 200


def test_bootstrap_generates_a_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENTRACY_ADMIN_PASSWORD", raising=False)
    out = StringIO()
    call_command("bootstrap", stdout=out)
    assert "Generated password (shown once)" in out.getvalue()


def test_create_api_key_for_unknown_project_fails_clearly() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("create_api_key", project="nope", name="x")


def test_worker_runs_tasks_through_the_broker(server_url: str) -> None:
    """Embedded mode: the server's own worker on the memory broker. Distributed mode: a worker
    started here consumes from Redis, as `celery worker` would."""
    from opentracy_site.celery import ping
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()  # already running in embedded mode
    # This process hosts a worker, so Celery guards against blocking joins; this one is safe.
    assert ping.delay().get(timeout=15, disable_sync_subtasks=False) == "pong"
