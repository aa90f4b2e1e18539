"""The providers page (credentials per project, "test connection", cooldowns), its admin
counterpart, and `credential_test` against the fake upstreams over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, free_port
from gateway import connection, failover
from gateway.cache import _load_credentials
from gateway.crypto import decrypt, encrypt, open_options
from gateway.models import ProviderCredential
from gateway.services import credential_set, credential_test, credential_update
from tests.fakes.server import LoopbackServer

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}
WRONG_KEY = "sk-wrong-key-that-must-never-show-4242"


@pytest.fixture(autouse=True)
def _no_breakers() -> Iterator[None]:
    failover.reset()
    yield
    failover.reset()


def browser(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def page_url(slug: str = "acme", rest: str = "") -> str:
    return f"/projects/{slug}/providers{rest}"


def form_data(**overrides: str) -> dict[str, str]:
    data = {"provider": "openai", "label": "", "api_key": "", "base_url": "", "weight": "1", "options": ""}
    data.update(overrides)
    return data


@pytest.fixture
def stored(people: dict[str, Any], fake_openai: Any, fake_anthropic: Any) -> dict[str, ProviderCredential]:
    project = people["project"]
    return {
        "openai": credential_set(
            project=project, provider="openai", api_key=FAKE_OPENAI_KEY, base_url=f"{fake_openai.base_url}/v1"
        ),
        "anthropic": credential_set(
            project=project, provider="anthropic", api_key=FAKE_ANTHROPIC_KEY, base_url=fake_anthropic.base_url
        ),
    }


# ---------------------------------------------------------------- permissions


def test_outsider_gets_404_on_every_url_and_anonymous_is_sent_to_login(
    people: dict[str, Any], stored: dict[str, ProviderCredential]
) -> None:
    pk = stored["openai"].pk
    outsider = browser(people["outsider"])
    calls = [
        ("get", page_url()),
        ("post", page_url()),
        ("get", page_url(rest="/cooldowns")),
        ("get", page_url(rest=f"/{pk}/edit")),
        ("post", page_url(rest=f"/{pk}/edit")),
        ("post", page_url(rest=f"/{pk}/delete")),
        ("post", page_url(rest=f"/{pk}/test")),
    ]
    for method, url in calls:
        data = form_data(api_key="sk-outsider") if method == "post" else {}
        assert getattr(outsider, method)(url, data).status_code == 404, (method, url)
        assert getattr(Client(), method)(url, data).status_code == 302, (method, url)
    # The outsider's own project does not reach into acme's credentials either.
    assert outsider.post(page_url("other", f"/{pk}/test")).status_code == 404
    assert outsider.post(page_url("other", f"/{pk}/delete")).status_code == 404
    assert ProviderCredential.objects.filter(pk=pk).exists()
    assert browser(people["owner"]).get(page_url("nope")).status_code == 404


def test_member_can_view_and_test_but_not_change(people: dict[str, Any], stored: dict[str, ProviderCredential]) -> None:
    cred = stored["openai"]
    member = browser(people["member"])
    page = member.get(page_url())
    html = page.content.decode()
    assert page.status_code == 200 and "openai" in html and "Test connection" in html
    assert "Add a credential" not in html and "/delete" not in html
    assert member.post(page_url(), form_data(api_key="sk-member-1")).status_code == 403
    assert member.get(page_url(rest=f"/{cred.pk}/edit")).status_code == 403
    assert member.post(page_url(rest=f"/{cred.pk}/edit"), form_data(base_url="http://evil:1")).status_code == 403
    assert member.post(page_url(rest=f"/{cred.pk}/delete")).status_code == 403
    assert ProviderCredential.objects.filter(project=people["project"]).count() == 2
    cred.refresh_from_db()
    assert cred.base_url.endswith("/v1") and "evil" not in cred.base_url
    result = member.post(page_url(rest=f"/{cred.pk}/test"), headers=HTMX)
    assert result.status_code == 200 and "Connected" in result.content.decode()
    assert member.get(page_url(rest="/cooldowns")).status_code == 200


def test_home_links_each_project_to_its_providers_page(people: dict[str, Any]) -> None:
    html = browser(people["member"]).get("/").content.decode()
    assert 'href="/projects/acme/providers"' in html and "/projects/other/providers" not in html


# ---------------------------------------------------------------- owner edits


def test_owner_adds_edits_and_deletes_a_credential(people: dict[str, Any]) -> None:
    owner = browser(people["owner"])
    secret = "sk-owner-secret-key-123456"
    resp = owner.post(
        page_url(),
        form_data(label="eu", api_key=secret, base_url="http://vllm:8000/v1/", weight="3", options='{"x": "y"}'),
    )
    assert resp.status_code == 302 and resp["Location"] == page_url()
    cred = ProviderCredential.objects.get(project=people["project"], provider="openai", label="eu")
    assert (cred.base_url, cred.weight, cred.options) == ("http://vllm:8000/v1", 3, {"x": "y"})
    assert secret not in cred.api_key_encrypted and decrypt(cred.api_key_encrypted) == secret

    html = owner.get(page_url()).content.decode()
    assert "http://vllm:8000/v1" in html and "Saved the openai:eu credential" in html
    assert secret not in html

    # The edit form never shows the key; saving it with the key left empty keeps the stored one.
    edit_url = page_url(rest=f"/{cred.pk}/edit")
    form = owner.get(edit_url, headers=HTMX)
    assert form.status_code == 200 and 'id="credential-form"' in form.content.decode()
    assert secret not in form.content.decode() and "<html" not in form.content.decode()
    assert secret not in owner.get(edit_url).content.decode()
    resp = owner.post(edit_url, form_data(label="eu", base_url="https://api.example.com/v1", weight="5"))
    assert resp.status_code == 302
    cred.refresh_from_db()
    assert (cred.base_url, cred.weight, cred.options) == ("https://api.example.com/v1", 5, {})
    assert decrypt(cred.api_key_encrypted) == secret
    # A new key replaces it.
    owner.post(edit_url, form_data(label="eu", api_key="sk-rotated-key-999", base_url="https://api.example.com/v1"))
    cred.refresh_from_db()
    assert decrypt(cred.api_key_encrypted) == "sk-rotated-key-999"

    # Delete: htmx gets an empty body to swap the rows out; a plain form post redirects.
    assert owner.post(page_url(rest=f"/{cred.pk}/delete"), headers=HTMX).content == b""
    assert not ProviderCredential.objects.filter(pk=cred.pk).exists()
    other = credential_set(project=people["project"], provider="anthropic", api_key="sk-ant-x")
    assert owner.post(page_url(rest=f"/{other.pk}/delete")).status_code == 302
    assert not ProviderCredential.objects.filter(project=people["project"]).exists()


@pytest.mark.parametrize(
    ("overrides", "field_error"),
    [
        ({"options": "{not json"}, "Enter a valid JSON."),
        ({"options": '["a", "b"]'}, "Options must be a JSON object of strings"),
        ({"options": '{"n": 3}'}, "Options must be a JSON object of strings"),
        ({"base_url": "ftp://files.example.com"}, "Enter an http:// or https:// URL."),
        ({"base_url": "http://"}, "URL with a host"),
        ({"weight": "-1"}, "greater than or equal to 0"),
        ({"label": "has spaces"}, "letters, numbers, underscores or hyphens"),
        ({"api_key": ""}, "Enter the openai API key."),
        ({"provider": "nope"}, "Select a valid choice."),
        ({"provider": "azure"}, "`azure` needs a base URL."),
    ],
)
def test_invalid_input_is_shown_inline_and_nothing_is_saved(
    people: dict[str, Any], overrides: dict[str, str], field_error: str
) -> None:
    owner = browser(people["owner"])
    data = (
        form_data(api_key="sk-never-rendered-5555", **overrides)
        if "api_key" not in overrides
        else form_data(**overrides)
    )
    resp = owner.post(page_url(), data)
    html = resp.content.decode()
    assert resp.status_code == 400
    assert field_error in html.replace("&#x27;", "'").replace("&quot;", '"')
    assert 'class="field has-error"' in html
    assert "sk-never-rendered-5555" not in html
    assert not ProviderCredential.objects.filter(project=people["project"]).exists()


def test_invalid_edit_keeps_the_stored_row(people: dict[str, Any]) -> None:
    cred = credential_set(project=people["project"], provider="openai", api_key="sk-keep", options={"a": "b"})
    resp = browser(people["owner"]).post(page_url(rest=f"/{cred.pk}/edit"), form_data(options="{oops"))
    assert resp.status_code == 400 and "Enter a valid JSON." in resp.content.decode()
    cred.refresh_from_db()
    assert cred.options == {"a": "b"} and decrypt(cred.api_key_encrypted) == "sk-keep"


def test_a_second_credential_with_the_same_label_is_refused(people: dict[str, Any]) -> None:
    credential_set(project=people["project"], provider="openai", api_key="sk-first")
    resp = browser(people["owner"]).post(page_url(), form_data(api_key="sk-second"))
    assert (
        resp.status_code == 400
        and "already has the credential openai:default; edit it instead." in resp.content.decode()
    )
    cred = ProviderCredential.objects.get(project=people["project"])
    assert decrypt(cred.api_key_encrypted) == "sk-first"


def test_self_hosted_providers_need_no_key(people: dict[str, Any]) -> None:
    resp = browser(people["owner"]).post(page_url(), form_data(provider="vllm", base_url="http://vllm:8000/v1"))
    assert resp.status_code == 302
    assert ProviderCredential.objects.get(project=people["project"], provider="vllm").base_url == "http://vllm:8000/v1"


def test_secret_options_are_masked_and_the_mask_keeps_them(people: dict[str, Any]) -> None:
    cred = credential_set(
        project=people["project"],
        provider="openai",
        api_key="sk-x",
        options={"session_token": "tok-very-secret-77", "region": "us-east-1"},
    )
    owner = browser(people["owner"])
    for url in (page_url(), page_url(rest=f"/{cred.pk}/edit")):
        html = owner.get(url).content.decode()
        assert "tok-very-secret-77" not in html and "us-east-1" in html
    masked = '{"session_token": "********", "region": "eu-west-1"}'
    assert owner.post(page_url(rest=f"/{cred.pk}/edit"), form_data(options=masked)).status_code == 302
    cred.refresh_from_db()
    assert open_options(cred.options) == {"session_token": "tok-very-secret-77", "region": "eu-west-1"}


# ---------------------------------------------------------------- test connection


def test_connection_ok_against_the_fake_openai_and_anthropic(
    people: dict[str, Any], stored: dict[str, ProviderCredential]
) -> None:
    openai_result = credential_test(credential=stored["openai"])
    assert (openai_result.ok, openai_result.status, openai_result.state) == (True, 200, "ok")
    assert "gpt-4o" in openai_result.models and openai_result.latency_ms > 0
    assert openai_result.detail == "connected: 5 models listed"
    anthropic_result = credential_test(credential=stored["anthropic"])
    assert anthropic_result.ok and anthropic_result.models[0] == "claude-sonnet-4-5-20250929"

    owner = browser(people["owner"])
    fragment = owner.post(page_url(rest=f"/{stored['anthropic'].pk}/test"), headers=HTMX).content.decode()
    assert "Connected" in fragment and "claude-haiku-4-5-20251001" in fragment and "HTTP 200" in fragment
    assert "<html" not in fragment
    # Without htmx the whole page comes back with the result in place.
    full = owner.post(page_url(rest=f"/{stored['openai'].pk}/test")).content.decode()
    assert "<html" in full and "connected: 5 models listed" in full


def test_connection_to_azure_lists_models_with_the_api_key_header(people: dict[str, Any], fake_openai: Any) -> None:
    cred = credential_set(
        project=people["project"],
        provider="azure",
        api_key=FAKE_OPENAI_KEY,
        base_url=fake_openai.base_url,
        options={"api_version": "2024-10-21"},
    )
    result = credential_test(credential=cred)
    assert result.ok and "gpt-4o-mini" in result.models
    cred.api_key_encrypted = encrypt(WRONG_KEY)
    result = credential_test(credential=cred)
    assert not result.ok and result.detail.startswith("azure rejected the key (HTTP 401)")


def test_a_wrong_key_is_reported_as_rejected_and_never_shown(
    people: dict[str, Any], fake_openai: Any, fake_anthropic: Any
) -> None:
    project = people["project"]
    bad_openai = credential_set(
        project=project, provider="openai", api_key=WRONG_KEY, base_url=f"{fake_openai.base_url}/v1"
    )
    bad_anthropic = credential_set(
        project=project, provider="anthropic", api_key=WRONG_KEY, base_url=fake_anthropic.base_url
    )
    result = credential_test(credential=bad_openai)
    assert (result.ok, result.status, result.models) == (False, 401, [])
    assert result.detail.startswith("openai rejected the key (HTTP 401): Incorrect API key provided")
    assert WRONG_KEY not in result.detail
    result = credential_test(credential=bad_anthropic)
    assert result.detail == "anthropic rejected the key (HTTP 401): invalid x-api-key"

    owner = browser(people["owner"])
    for cred in (bad_openai, bad_anthropic):
        html = owner.post(page_url(rest=f"/{cred.pk}/test"), headers=HTMX).content.decode()
        assert "Failed" in html and "rejected the key" in html and WRONG_KEY not in html
        assert WRONG_KEY not in owner.post(page_url(rest=f"/{cred.pk}/test")).content.decode()


class EchoingUpstream(LoopbackServer):
    """An upstream that echoes the key it got in its 401 (some do), is too slow, or is no API at all."""

    name = "echoing-upstream"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/slow/models", self._slow)
        app.router.add_get("/html/models", self._html)

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>a login page</html>", content_type="text/html")

    async def _models(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "")
        return web.json_response({"error": {"message": f"bad key {key}", "type": "auth"}}, status=401)

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"object": "list", "data": []})


@pytest.fixture
def echoing() -> Iterator[EchoingUpstream]:
    server = EchoingUpstream()
    server.start()
    yield server
    server.stop()


def test_an_upstream_echoing_the_key_is_redacted(people: dict[str, Any], echoing: EchoingUpstream) -> None:
    cred = credential_set(
        project=people["project"], provider="openai", api_key=WRONG_KEY, base_url=f"{echoing.base_url}/v1"
    )
    result = credential_test(credential=cred)
    assert result.detail == "openai rejected the key (HTTP 401): bad key Bearer ***"


def test_a_slow_upstream_times_out(
    people: dict[str, Any], echoing: EchoingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "TIMEOUT_S", 0.3)
    cred = credential_set(project=people["project"], provider="vllm", api_key="", base_url=f"{echoing.base_url}/slow")
    result = credential_test(credential=cred)
    assert (result.ok, result.status) == (False, None)
    assert result.detail == "timed out after 0.3 s (ReadTimeout)" and result.latency_ms < 3000


def test_a_closed_port_is_reported_as_could_not_connect(people: dict[str, Any]) -> None:
    port = free_port()  # bound and released: nothing listens there
    cred = credential_set(
        project=people["project"], provider="openai", api_key=WRONG_KEY, base_url=f"http://127.0.0.1:{port}/v1"
    )
    result = credential_test(credential=cred)
    assert (result.ok, result.status, result.state) == (False, None, "failed")
    assert result.detail.startswith(f"could not connect to 127.0.0.1:{port}: ConnectError")
    html = browser(people["owner"]).post(page_url(rest=f"/{cred.pk}/test"), headers=HTMX).content.decode()
    assert "could not connect" in html and WRONG_KEY not in html


def test_a_base_url_that_is_not_an_api_fails_clearly(
    people: dict[str, Any], echoing: EchoingUpstream, fake_anthropic: Any
) -> None:
    project = people["project"]
    html_page = credential_set(project=project, provider="vllm", api_key="", base_url=f"{echoing.base_url}/html")
    result = credential_test(credential=html_page)
    assert (result.ok, result.status) == (False, 200)
    assert result.detail == "HTTP 200 but the answer is not a model list: check the base URL"
    # Anthropic's server is no OpenAI-compatible one: it has no /models.
    elsewhere = credential_set(
        project=project, provider="custom", api_key="sk-custom-1", base_url=fake_anthropic.base_url
    )
    result = credential_test(credential=elsewhere)
    assert (result.ok, result.status) == (False, 404)
    assert result.detail == "the model list was not found (HTTP 404): check the base URL"


def test_providers_without_a_list_endpoint_say_so(people: dict[str, Any]) -> None:
    project = people["project"]
    bedrock = ProviderCredential.objects.create(
        project=project, provider="bedrock", api_key_encrypted=encrypt("secret"), options={"region": "us-east-1"}
    )
    result = credential_test(credential=bedrock)
    assert (result.ok, result.state) == (None, "unknown")
    assert result.detail == "not testable without a model call; send a chat request"
    html = browser(people["member"]).post(page_url(rest=f"/{bedrock.pk}/test"), headers=HTMX).content.decode()
    assert "Not tested" in html
    local = ProviderCredential.objects.create(project=project, provider="local", api_key_encrypted=encrypt(""))
    result = credential_test(credential=local)
    assert result.ok is True and "smollm2-135m-instruct" in result.models


def test_a_credential_that_cannot_be_decrypted_fails_clearly(people: dict[str, Any], fake_openai: Any) -> None:
    cred = credential_set(project=people["project"], provider="openai", api_key="k", base_url=fake_openai.base_url)
    cred.api_key_encrypted = "not-a-fernet-token"
    result = credential_test(credential=cred)
    assert result.ok is False and "cannot be decrypted" in result.detail


# ---------------------------------------------------------------- cooldowns


def test_cooldowns_fragment_shows_failing_targets(people: dict[str, Any]) -> None:
    project = people["project"]
    member = browser(people["member"])
    empty = member.get(page_url(rest="/cooldowns")).content.decode()
    assert "No failures recorded" in empty and 'hx-trigger="every 5s"' in empty

    failover._failed((project.id, "openai", "eu", "gpt-4o"), "APIConnectionError")
    html = member.get(page_url(rest="/cooldowns"), headers=HTMX).content.decode()
    assert "openai@eu/gpt-4o" in html and "APIConnectionError" in html and "s left" not in html

    for _ in range(settings.OPENTRACY_COOLDOWN_FAILURES):
        failover._failed((project.id, "anthropic", "", "claude-haiku-4-5"), "RateLimitError")
    failover._failed((people["other_project"].id, "openai", "", "gpt-secret-model"), "APIConnectionError")
    html = member.get(page_url(rest="/cooldowns"), headers=HTMX).content.decode()
    assert "anthropic/claude-haiku-4-5" in html and "s left" in html and "RateLimitError" in html
    assert "gpt-secret-model" not in html
    # The page embeds the same fragment, polling every 5 s.
    page = member.get(page_url()).content.decode()
    assert 'hx-get="/projects/acme/providers/cooldowns"' in page and "anthropic/claude-haiku-4-5" in page
    assert "vendor/htmx.min.js" in page


# ---------------------------------------------------------------- admin


@pytest.fixture
def admin_client(people: dict[str, Any]) -> Client:
    root = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "pw-root-123")
    return browser(root)


def test_admin_test_connection_action_reports_each_result(
    admin_client: Client, people: dict[str, Any], stored: dict[str, ProviderCredential]
) -> None:
    bad = credential_set(
        project=people["project"], provider="openai", label="bad", api_key=WRONG_KEY, base_url=stored["openai"].base_url
    )
    ids = [stored["openai"].pk, stored["anthropic"].pk, bad.pk]
    resp = admin_client.post(
        "/admin/gateway/providercredential/", {"action": "test_connection", "_selected_action": ids}, follow=True
    )
    shown = {str(m): m.level_tag for m in resp.context["messages"]}
    assert any("openai:default: ok — connected: 5 models listed" in m and t == "success" for m, t in shown.items())
    assert any("anthropic:default: ok" in m and t == "success" for m, t in shown.items())
    assert any(
        "openai:bad: failed — openai rejected the key (HTTP 401)" in m and t == "warning" for m, t in shown.items()
    )
    assert WRONG_KEY not in resp.content.decode()


def test_admin_edit_keeps_the_key_and_saves_label_weight_options(admin_client: Client, people: dict[str, Any]) -> None:
    resp = admin_client.post(
        "/admin/gateway/providercredential/add/",
        {
            "project": people["project"].id,
            "provider": "openai",
            "label": "eu",
            "api_key": "sk-admin-1",
            "base_url": "",
            "weight": "2",
            "options": '{"org": "acme"}',
        },
    )
    assert resp.status_code == 302
    cred = ProviderCredential.objects.get(project=people["project"], label="eu")
    assert (cred.weight, cred.options, decrypt(cred.api_key_encrypted)) == (2, {"org": "acme"}, "sk-admin-1")
    resp = admin_client.post(
        f"/admin/gateway/providercredential/{cred.id}/change/",
        {
            "provider": "openai",
            "label": "eu-west",
            "api_key": "",
            "base_url": "http://vllm:8000/v1",
            "weight": "7",
            "options": '{"org": "acme2"}',
        },
    )
    assert resp.status_code == 302
    cred.refresh_from_db()
    assert (cred.label, cred.weight, cred.options, cred.base_url) == (
        "eu-west",
        7,
        {"org": "acme2"},
        "http://vllm:8000/v1",
    )
    assert decrypt(cred.api_key_encrypted) == "sk-admin-1" and cred.project == people["project"]
    listing = admin_client.get("/admin/gateway/providercredential/?provider=openai").content.decode()
    assert "eu-west" in listing and "sk-admin-1" not in listing and "acme2" in listing
    change = admin_client.get(f"/admin/gateway/providercredential/{cred.id}/change/").content.decode()
    assert "sk-admin-1" not in change
    bad = admin_client.post(
        f"/admin/gateway/providercredential/{cred.id}/change/",
        {"provider": "openai", "label": "eu-west", "api_key": "", "base_url": "", "weight": "1", "options": "{x"},
    )
    assert bad.status_code == 200 and "Enter a valid JSON." in bad.content.decode()


def test_secret_options_are_encrypted_at_rest(people: dict[str, Any]) -> None:
    project = people["project"]
    options = {"region": "eu-west-1", "access_key_id": "AKIAEXAMPLE", "session_token": "tok-very-secret-123"}
    credential_set(project=project, provider="bedrock", api_key="aws-secret", options=options)
    row = ProviderCredential.objects.get(project=project, provider="bedrock")
    assert row.options["region"] == "eu-west-1" and "tok-very-secret-123" not in str(row.options)
    loaded = _load_credentials(project.id)["bedrock"][0]
    assert loaded.options["session_token"] == "tok-very-secret-123"
    assert "tok-very-secret-123" in loaded.secrets()
    # Saving the stored (sealed) value back, as the masked form does, keeps it as it was.
    sealed = row.options["session_token"]
    credential_update(
        credential=row, provider="bedrock", label=row.label, base_url="", options=dict(row.options), weight=1
    )
    row.refresh_from_db()
    assert row.options["session_token"] == sealed
    credential_set(project=project, provider="bedrock", api_key="aws-secret", options=dict(row.options))
    assert _load_credentials(project.id)["bedrock"][0].options["session_token"] == "tok-very-secret-123"
