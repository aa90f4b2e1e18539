"""The project settings page (/projects/<slug>/settings): API keys (shown once, working, revoked),
aliases (edit, history, rollback), members, trace retention; owners edit, members view (403 on
any write, as on the providers page), outsiders get 404."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from django.test import Client

from gateway.models import Alias, AliasChange, ApiKey, Membership
from gateway.services import alias_set

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}
URL = "/projects/acme/settings"
RAW_KEY = re.compile(r'<code id="new-key"[^>]*>(ot-[^<]+)</code>')


def browser(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def create_key(owner: Client, name: str = "backend", htmx: bool = False) -> str:
    resp = owner.post(f"{URL}/keys", {"name": name}, headers=HTMX if htmx else {})
    assert resp.status_code == 200, resp.content
    assert resp["Cache-Control"] == "no-store"
    match = RAW_KEY.search(resp.content.decode())
    assert match, "the raw key is shown on creation"
    assert b"shown only this once" in resp.content
    return match.group(1)


def write_urls(people: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    key = ApiKey.objects.filter(project=people["project"]).first()
    member = Membership.objects.get(project=people["project"], user=people["member"])
    return [
        (f"{URL}/keys", {"name": "x"}),
        (f"{URL}/keys/{key.pk if key else 1}/revoke", {}),
        (f"{URL}/aliases", {"name": "smart", "target": "openai/gpt-4o"}),
        (f"{URL}/aliases/rollback", {"name": "smart"}),
        (f"{URL}/members", {"email": "outsider@example.com"}),
        (f"{URL}/members/{member.pk}/remove", {}),
        (f"{URL}/retention", {"days": "7"}),
    ]


# ---------------------------------------------------------------- access


def test_outsider_gets_404_everywhere_and_anonymous_goes_to_login(people: dict[str, Any], api_key: str) -> None:
    outsider = browser(people["outsider"])
    assert outsider.get(URL).status_code == 404
    for url, data in write_urls(people):
        assert outsider.post(url, data).status_code == 404, url
    anonymous = Client()
    resp = anonymous.get(URL)
    assert resp.status_code == 302 and "/login/" in resp["Location"]
    assert anonymous.post(f"{URL}/keys", {"name": "x"}).status_code == 302


def test_member_views_but_every_write_is_403(people: dict[str, Any], api_key: str) -> None:
    alias_set(project=people["project"], name="smart", target="openai/gpt-4o", changed_by="owner")
    member = browser(people["member"])
    page = member.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "test-app" in html and "smart" in html and "member@example.com" in html  # sees every section
    assert "only its owners can change them" in html
    assert "Create key" not in html and "Revoke" not in html and "Roll back" not in html and "Add member" not in html
    for url, data in write_urls(people):
        assert member.post(url, data).status_code == 403, url
    assert ApiKey.objects.filter(project=people["project"], revoked_at__isnull=False).count() == 0
    assert ApiKey.objects.filter(project=people["project"]).count() == 1
    assert Alias.objects.get(project=people["project"], name="smart").target == "openai/gpt-4o"
    people["project"].refresh_from_db()
    assert people["project"].retention_days == 90


def test_providers_section_links_to_the_providers_page(people: dict[str, Any]) -> None:
    assert b'href="/projects/acme/providers"' in browser(people["owner"]).get(URL).content


# ---------------------------------------------------------------- API keys


def test_owner_creates_a_key_sees_it_once_uses_it_and_revokes_it(people: dict[str, Any], server_url: str) -> None:
    owner = browser(people["owner"])
    raw = create_key(owner, "backend-prod")
    key = ApiKey.objects.get(project=people["project"], name="backend-prod")
    assert raw.startswith(key.prefix) and key.created_by == people["owner"]

    again = owner.get(URL).content.decode()
    assert raw not in again and "backend-prod" in again and f"{key.prefix}…" in again  # only the prefix now

    v1 = httpx.Client(base_url=server_url, timeout=10)
    assert v1.get("/v1/models", headers={"Authorization": f"Bearer {raw}"}).status_code == 200

    resp = owner.post(f"{URL}/keys/{key.pk}/revoke", headers=HTMX)
    assert resp.status_code == 200 and b'id="keys"' in resp.content and b"revoked" in resp.content
    assert b"<html" not in resp.content  # the section only
    key.refresh_from_db()
    assert key.revoked_at is not None
    denied = v1.get("/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert denied.status_code == 401


def test_key_creation_through_htmx_returns_the_section_and_a_copy_button(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    raw = create_key(owner, "htmx-key", htmx=True)
    assert ApiKey.objects.filter(project=people["project"], name="htmx-key").exists()
    resp = owner.post(f"{URL}/keys", {"name": "another"}, headers=HTMX)
    assert raw not in resp.content.decode()  # each creation shows its own key only
    assert b"navigator.clipboard.writeText" in resp.content


def test_revoking_another_projects_key_is_404(people: dict[str, Any], outsider_key: str) -> None:
    foreign = ApiKey.objects.get(project=people["other_project"])
    assert browser(people["owner"]).post(f"{URL}/keys/{foreign.pk}/revoke").status_code == 404
    foreign.refresh_from_db()
    assert foreign.revoked_at is None


def test_a_key_without_a_name_shows_an_error(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    resp = owner.post(f"{URL}/keys", {"name": "  "})
    assert resp.status_code == 400 and b"This field is required." in resp.content
    fragment = owner.post(f"{URL}/keys", {"name": ""}, headers=HTMX)
    assert fragment.status_code == 200 and b"This field is required." in fragment.content  # htmx swaps 2xx only
    assert not ApiKey.objects.filter(project=people["project"]).exists()


# ---------------------------------------------------------------- aliases


def test_alias_edit_history_and_rollback_through_the_page(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    project = people["project"]
    resp = owner.post(
        f"{URL}/aliases",
        {"name": "smart", "target": "openai/gpt-4o", "fallbacks": "anthropic/claude-sonnet-4-5", "retries": "2"},
    )
    assert resp.status_code == 302
    alias = Alias.objects.get(project=project, name="smart")
    assert (alias.target, alias.fallbacks, alias.retries) == ("openai/gpt-4o", ["anthropic/claude-sonnet-4-5"], 2)

    resp = owner.post(f"{URL}/aliases", {"name": "smart", "target": "openai/gpt-4o-mini"}, headers=HTMX)
    assert resp.status_code == 200 and b"Saved the alias smart" in resp.content
    alias.refresh_from_db()
    assert alias.target == "openai/gpt-4o-mini" and alias.fallbacks == []  # empty fallbacks clear them

    page = owner.get(URL).content.decode()
    assert "2 changes" in page and "by owner@example.com" in page  # history with who (and when)
    assert AliasChange.objects.filter(project=project, name="smart").count() == 2

    resp = owner.post(f"{URL}/aliases/rollback", {"name": "smart"}, headers=HTMX)
    assert resp.status_code == 200 and b"Rolled smart back to openai/gpt-4o." in resp.content
    alias.refresh_from_db()
    assert alias.target == "openai/gpt-4o"

    # A rollback is a change too: rolling back again undoes it.
    owner.post(f"{URL}/aliases/rollback", {"name": "smart"})
    alias.refresh_from_db()
    assert alias.target == "openai/gpt-4o-mini"

    # Rolling back an alias's creation deletes it; it stays listed with its history and comes back.
    owner.post(f"{URL}/aliases", {"name": "fresh", "target": "openai/gpt-4o"})
    owner.post(f"{URL}/aliases/rollback", {"name": "fresh"})
    assert not Alias.objects.filter(project=project, name="fresh").exists()
    assert b"deleted" in owner.get(URL).content
    owner.post(f"{URL}/aliases/rollback", {"name": "fresh"})
    assert Alias.objects.get(project=project, name="fresh").target == "openai/gpt-4o"


def test_bad_alias_input_shows_errors(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    cases = [
        ({"name": "smart", "target": "not-a-model"}, b"is not a known model"),
        ({"name": "smart", "target": "openai/gpt-4o", "fallbacks": "nope"}, b"is not a known model"),
        ({"name": "has space", "target": "openai/gpt-4o"}, b"no spaces or slashes"),
        ({"name": "smart", "target": "openai/gpt-4o", "retries": "99"}, b"less than or equal to 10"),
        ({"name": "", "target": ""}, b"This field is required."),
    ]
    for data, error in cases:
        resp = owner.post(f"{URL}/aliases", data)
        assert resp.status_code == 400 and error in resp.content, (data, resp.content[-2000:])
    resp = owner.post(f"{URL}/aliases/rollback", {"name": "never-existed"}, headers=HTMX)
    assert resp.status_code == 200 and b"has no history to roll back" in resp.content
    assert not Alias.objects.filter(project=people["project"]).exists()


# ---------------------------------------------------------------- members


def test_owner_adds_and_removes_members(people: dict[str, Any]) -> None:
    from django.contrib.auth import get_user_model

    newcomer = get_user_model().objects.create_user("newcomer", email="New.Comer@example.com", password="pw-12345678")
    owner = browser(people["owner"])
    project = people["project"]

    resp = owner.post(f"{URL}/members", {"email": "new.comer@example.com"}, headers=HTMX)
    assert resp.status_code == 200 and b"Added newcomer as a member." in resp.content
    added = Membership.objects.get(project=project, user=newcomer)
    assert added.role == Membership.Role.MEMBER
    assert browser(newcomer).get(URL).status_code == 200  # they can see the project now

    resp = owner.post(f"{URL}/members/{added.pk}/remove")
    assert resp.status_code == 302
    assert not Membership.objects.filter(project=project, user=newcomer).exists()
    assert browser(newcomer).get(URL).status_code == 404


def test_member_errors(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    project = people["project"]
    for email, error in [
        ("nobody@example.com", b"No account has this e-mail address"),
        ("member@example.com", b"Already a member of this project."),
        ("owner@example.com", b"Already a member of this project."),  # never demotes an owner
        ("not-an-email", b"Enter a valid email address."),
    ]:
        resp = owner.post(f"{URL}/members", {"email": email})
        assert resp.status_code == 400 and error in resp.content, email
    assert Membership.objects.get(project=project, user=people["owner"]).role == Membership.Role.OWNER

    me = Membership.objects.get(project=project, user=people["owner"])
    resp = owner.post(f"{URL}/members/{me.pk}/remove", headers=HTMX)
    assert resp.status_code == 200 and b"keeps at least one owner" in resp.content
    assert Membership.objects.filter(pk=me.pk).exists()
    foreign = Membership.objects.get(project=people["other_project"])
    assert owner.post(f"{URL}/members/{foreign.pk}/remove").status_code == 404


# ---------------------------------------------------------------- retention


def test_retention_change_applies(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    resp = owner.post(f"{URL}/retention", {"days": "30"}, headers=HTMX)
    assert resp.status_code == 200 and b"Traces are now kept 30 days." in resp.content
    people["project"].refresh_from_db()
    assert people["project"].retention_days == 30
    assert b"<strong>30 days</strong>" in owner.get(URL).content


@pytest.mark.parametrize(
    ("days", "error"),
    [("0", b"greater than or equal to 1"), ("3651", b"less than or equal to 3650"), ("x", b"Enter a whole number.")],
)
def test_bad_retention_shows_errors(people: dict[str, Any], days: str, error: bytes) -> None:
    resp = browser(people["owner"]).post(f"{URL}/retention", {"days": days})
    assert resp.status_code == 400 and error in resp.content
    people["project"].refresh_from_db()
    assert people["project"].retention_days == 90
