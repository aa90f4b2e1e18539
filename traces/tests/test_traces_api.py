"""GET /api/traces and /api/traces/<id>: filters, cursor pagination, project scoping."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from django.test import Client

from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def traffic(client: Any) -> dict[str, str]:
    """Five traces of known shape in `project`; returns trace ids by label."""
    ids = {}
    for label, model, meta in [
        ("a", "gpt-4o-mini", {"team": "search"}),
        ("b", "gpt-4o-mini", {"team": "billing"}),
        ("c", "claude-haiku-4-5", {"team": "search"}),
        ("d", "gpt-4o", {}),
    ]:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"question {label} zebra{label}"}], metadata=meta
        )
        ids[label] = raw.headers["x-opentracy-trace-id"]
    with pytest.raises(openai.InternalServerError) as err:  # a failed request is traced too
        client.chat.completions.create(model="openai/gpt-error-500", messages=[{"role": "user", "content": "e"}])
    for trace_id in [*ids.values(), err.value.response.headers["x-opentracy-trace-id"]]:
        read_trace(trace_id)  # written
    return ids


@pytest.fixture
def api(server_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def _ids(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [t["trace_id"] for t in resp.json()["data"]]


def test_filters(api: httpx.Client, traffic: dict[str, str]) -> None:
    assert len(_ids(api.get("/api/traces"))) == 5
    assert set(_ids(api.get("/api/traces", params={"provider": "anthropic"}))) == {traffic["c"]}
    assert set(_ids(api.get("/api/traces", params={"model": "openai/gpt-4o-mini"}))) == {traffic["a"], traffic["b"]}
    assert len(_ids(api.get("/api/traces", params={"status": "error"}))) == 1
    assert len(_ids(api.get("/api/traces", params={"status": "502"}))) == 1
    search = api.get("/api/traces", params={"metadata_key": "team", "metadata_value": "search"})
    assert set(_ids(search)) == {traffic["a"], traffic["c"]}
    assert set(_ids(api.get("/api/traces", params={"q": "ZEBRAb"}))) == {traffic["b"]}
    assert _ids(api.get("/api/traces", params={"since": "2099-01-01T00:00:00Z"})) == []
    assert api.get("/api/traces", params={"since": "yesterday"}).status_code == 400
    assert api.get("/api/traces", params={"cursor": "garbage"}).status_code == 400


def test_cursor_pagination_walks_every_trace_once(api: httpx.Client, traffic: dict[str, str]) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.get("/api/traces", params=params).json()
        seen += [t["trace_id"] for t in page["data"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert set(traffic.values()) <= set(seen)


def test_detail_has_the_full_trace(api: httpx.Client, traffic: dict[str, str]) -> None:
    trace = api.get(f"/api/traces/{traffic['a']}").json()
    assert trace["request_messages"] == [{"role": "user", "content": "question a zebraa"}]
    assert trace["response_message"]["content"] == "You said: question a zebraa"
    assert trace["metadata"] == {"team": "search"} and trace["cost_total_usd"] > 0


def test_outsiders_are_refused(
    server_url: str, outsider_key: str, traffic: dict[str, str], people: dict[str, Any]
) -> None:
    outsider = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {outsider_key}"})
    assert _ids(outsider.get("/api/traces")) == []
    assert outsider.get(f"/api/traces/{traffic['a']}").status_code == 404
    assert httpx.get(f"{server_url}/api/traces").status_code in (401, 403)

    browser = Client()
    browser.force_login(people["outsider"])
    assert browser.get("/api/traces", {"project": "acme"}).status_code == 404
    browser.force_login(people["member"])
    assert len(browser.get("/api/traces", {"project": "acme"}).json()["data"]) == 5
