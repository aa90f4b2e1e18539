"""The admin writes through the services: alias edits land in the history, a new API key is
shown once, a credential is stored encrypted."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from gateway.crypto import decrypt
from gateway.keys import hash_key
from gateway.models import Alias, AliasChange, ApiKey, ProviderCredential

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(people: dict[str, Any]) -> Client:
    admin = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "pw-root-123")
    browser = Client()
    browser.force_login(admin)
    return browser


def test_alias_edits_are_recorded(admin_client: Client, people: dict[str, Any]) -> None:
    project = people["project"]
    resp = admin_client.post(
        "/admin/gateway/alias/add/", {"project": project.id, "name": "smart", "target": "openai/gpt-4o"}
    )
    assert resp.status_code == 302
    alias = Alias.objects.get(project=project, name="smart")
    admin_client.post(f"/admin/gateway/alias/{alias.id}/change/", {"target": "anthropic/claude-haiku-4-5"})
    changes = list(AliasChange.objects.filter(project=project, name="smart").values_list("from_target", "to_target"))
    assert changes == [("openai/gpt-4o", "anthropic/claude-haiku-4-5"), ("", "openai/gpt-4o")]
    assert AliasChange.objects.first().changed_by == "root@example.com"  # type: ignore[union-attr]


def test_new_api_key_is_shown_once_and_works(admin_client: Client, people: dict[str, Any]) -> None:
    resp = admin_client.post(
        "/admin/gateway/apikey/add/", {"project": people["project"].id, "name": "from-admin"}, follow=True
    )
    shown = [str(m) for m in resp.context["messages"] if "shown once" in str(m)]
    raw = shown[0].rsplit(" ", 1)[-1]
    assert ApiKey.objects.get(key_hash=hash_key(raw)).name == "from-admin"
    listing = admin_client.get("/admin/gateway/apikey/").content.decode()
    assert raw not in listing


def test_credential_form_stores_the_key_encrypted(admin_client: Client, people: dict[str, Any]) -> None:
    admin_client.post(
        "/admin/gateway/providercredential/add/",
        {"project": people["project"].id, "provider": "openai", "api_key": "sk-admin-secret-123", "base_url": ""},
    )
    cred = ProviderCredential.objects.get(project=people["project"], provider="openai")
    assert "sk-admin-secret-123" not in cred.api_key_encrypted
    page = admin_client.get(f"/admin/gateway/providercredential/{cred.id}/change/").content.decode()
    assert "sk-admin-secret-123" not in page
    # Changing the base URL alone keeps the stored key.
    admin_client.post(
        f"/admin/gateway/providercredential/{cred.id}/change/",
        {"project": people["project"].id, "provider": "openai", "api_key": "", "base_url": "http://vllm:8000/v1"},
    )
    cred.refresh_from_db()
    assert cred.base_url == "http://vllm:8000/v1" and decrypt(cred.api_key_encrypted) == "sk-admin-secret-123"
