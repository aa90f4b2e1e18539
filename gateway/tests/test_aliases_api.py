"""Aliases through the REST API: set, read with history, delete, one-call rollback; scoped to the
caller's project, refused to outsiders."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(server_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def test_set_get_history_and_rollback(api: httpx.Client) -> None:
    assert api.put("/api/aliases/smart", json={"target": "openai/gpt-4o"}).status_code == 200
    assert api.put("/api/aliases/smart", json={"target": "anthropic/claude-haiku-4-5"}).json()["target"] == (
        "anthropic/claude-haiku-4-5"
    )
    detail = api.get("/api/aliases/smart").json()
    assert detail["target"] == "anthropic/claude-haiku-4-5"
    assert [(h["from_target"], h["to_target"]) for h in detail["history"]] == [
        ("openai/gpt-4o", "anthropic/claude-haiku-4-5"),
        ("", "openai/gpt-4o"),
    ]
    assert detail["history"][0]["changed_by"] == "api-key:test-app"

    rolled = api.post("/api/aliases/smart/rollback")
    assert rolled.status_code == 200 and rolled.json()["target"] == "openai/gpt-4o"
    assert len(api.get("/api/aliases/smart").json()["history"]) == 3  # the rollback is itself recorded
    assert [a["name"] for a in api.get("/api/aliases").json()["data"]] == ["smart"]


def test_rollback_of_creation_deletes_and_delete_is_recorded(api: httpx.Client) -> None:
    api.put("/api/aliases/fast", json={"target": "openai/gpt-4o-mini"})
    assert api.post("/api/aliases/fast/rollback").json()["deleted"] is True
    assert api.get("/api/aliases/fast").status_code == 404
    api.put("/api/aliases/fast", json={"target": "openai/gpt-4o-mini"})
    assert api.delete("/api/aliases/fast").status_code == 204
    assert api.delete("/api/aliases/fast").status_code == 404
    assert api.post("/api/aliases/nothing/rollback").status_code == 400


def test_bad_targets_are_refused(api: httpx.Client) -> None:
    assert api.put("/api/aliases/smart", json={"target": "mystery/model"}).status_code == 400
    assert api.put("/api/aliases/smart", json={}).status_code == 400


def test_outsider_cannot_see_or_change_another_projects_alias(
    api: httpx.Client, server_url: str, outsider_key: str, people: dict[str, Any]
) -> None:
    api.put("/api/aliases/smart", json={"target": "openai/gpt-4o"})
    outsider = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {outsider_key}"})
    assert outsider.get("/api/aliases/smart").status_code == 404
    assert outsider.post("/api/aliases/smart/rollback").status_code == 400  # no such alias in their project
    outsider.put("/api/aliases/smart", json={"target": "openai/gpt-4o-mini"})  # their own alias, not ours
    assert api.get("/api/aliases/smart").json()["target"] == "openai/gpt-4o"

    browser = Client()
    browser.force_login(people["outsider"])
    assert browser.get("/api/aliases/smart", {"project": "acme"}).status_code == 404


def test_session_user_of_the_project_can_edit(people: dict[str, Any]) -> None:
    browser = Client()
    browser.force_login(people["member"])
    resp = browser.put("/api/aliases/smart", {"target": "openai/gpt-4o"}, content_type="application/json")
    assert resp.status_code == 200
    history = browser.get("/api/aliases/smart").json()["history"]
    assert history[0]["changed_by"] == "member@example.com"


def test_anonymous_and_bad_keys_are_refused(server_url: str) -> None:
    assert httpx.get(f"{server_url}/api/aliases").status_code in (401, 403)
    bad = httpx.get(f"{server_url}/api/aliases", headers={"Authorization": "Bearer ot-nope"})
    assert bad.status_code == 401
