"""The live tail: a chat completion through the engine shows up on the project's websocket
(ws/projects/<slug>/traces) as an htmx out-of-band row, through the real server (uvicorn serving
opentracy_site.asgi:application) with a logged-in session; outsiders and anonymous sockets are
refused and never see the project's rows."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings
from django.http import QueryDict
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from traces import live

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user: Any) -> str:
    browser = Client()
    browser.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"


def open_tail(
    server_url: str, cookie: str | None, slug: str = "acme", origin: str | None = None, query: str = ""
) -> ClientConnection:
    ws_url = server_url.replace("http://", "ws://") + f"/ws/projects/{slug}/traces" + (f"?{query}" if query else "")
    headers = {"Cookie": cookie} if cookie else {}
    return connect(ws_url, additional_headers=headers, origin=Origin(origin or server_url), open_timeout=5)


def wait_for(ws: ClientConnection, needle: str, timeout: float = 5.0) -> str:
    """The first message containing `needle` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            break
        if needle in str(message):
            return str(message)
    raise AssertionError(f"no message with {needle!r} within {timeout} s")


def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


def chat(client: Any, text: str, model: str = "gpt-4o-mini") -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    return str(raw.headers["x-opentracy-trace-id"])


def test_a_members_socket_receives_the_new_trace_as_an_htmx_row(
    server_url: str, client: Any, people: dict[str, Any]
) -> None:
    with open_tail(server_url, session_cookie(people["member"])) as ws:
        trace_id = chat(client, "live <b>tail</b> & friends")
        message = wait_for(ws, trace_id)
    assert message.startswith('<tbody hx-swap-oob="afterbegin:#trace-rows">')
    assert f'<tr id="trace-{trace_id}"' in message  # the traces page's row (or the fallback row)
    assert "gpt-4o-mini" in message and "openai" in message
    assert "live &lt;b&gt;tail&lt;/b&gt; &amp; friends" in message  # the prompt preview is escaped
    assert "<b>tail</b>" not in message


def test_one_message_per_batch_holds_every_row_of_the_project(
    server_url: str, client: Any, people: dict[str, Any]
) -> None:
    with open_tail(server_url, session_cookie(people["owner"])) as ws:
        ids = [chat(client, f"burst {i}") for i in range(3)]
        seen: set[str] = set()
        deadline = time.monotonic() + 5
        while seen != set(ids) and time.monotonic() < deadline:
            message = str(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            assert message.count("<tbody") == 1
            seen |= {t for t in ids if t in message}
    assert seen == set(ids)


def test_a_filtered_tail_sends_only_the_rows_its_filters_select(
    server_url: str, client: Any, people: dict[str, Any]
) -> None:
    cookie = session_cookie(people["member"])
    with (
        open_tail(server_url, cookie, query="range=24h&q=refund") as by_text,
        open_tail(server_url, cookie, query="model=gpt-4o&status=ok") as by_model,
        open_tail(server_url, cookie) as everything,
    ):
        other = chat(client, "where is my parcel")
        wanted = chat(client, "I want a REFUND please")
        seen = ""
        deadline = time.monotonic() + 5
        while not (other in seen and wanted in seen) and time.monotonic() < deadline:
            seen += str(everything.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        assert other in seen and wanted in seen  # one batch or two
        assert other not in wait_for(by_text, wanted)
        with pytest.raises(TimeoutError):  # both were gpt-4o-mini
            by_model.recv(timeout=0.5)
    with open_tail(server_url, cookie, query="min_cost=-1") as bad:
        assert close_code(bad) == 4400


def test_live_rows_match_filters_as_the_query_would() -> None:
    from datetime import UTC, datetime, timedelta

    from traces.filters import matches, parse_filters

    row = live.summary(
        {
            "trace_id": "00000000-0000-0000-0000-000000000002",
            "timestamp": datetime.now(UTC).timestamp(),
            "requested_model": "smart",
            "resolved_model": "openai/gpt-4o-mini",
            "provider": "openai",
            "alias": "smart",
            "status": 429,
            "api_key_id": 3,
            "latency_ms": 120.0,
            "metadata": {"team": "support"},
            "tags": ["beta"],
            "request_messages": '[{"role":"user","content":"Cancel my ORDER"}]',
        }
    )
    yes = [
        "model=smart",
        "alias=smart",
        "provider=openai",
        "status=error",
        "status=429",
        "api_key=3",
        "tag=beta",
        "metadata_key=team&metadata_value=support",
        "min_latency_ms=100",
        "q=cancel my order",
        "range=1h",
    ]
    no = [
        "model=gpt-4o",
        "status=ok",
        "status=500",
        "api_key=4",
        "tag=alpha",
        "metadata_key=team&metadata_value=x",
        "min_latency_ms=200",
        "min_cost=0",
        "q=refund",
        f"until={(datetime.now(UTC) - timedelta(hours=1)):%Y-%m-%dT%H:%M:%SZ}",
    ]
    for query in yes:
        assert matches(parse_filters(QueryDict(query), all_time=True), row), query
    for query in no:
        assert not matches(parse_filters(QueryDict(query), all_time=True), row), query


def test_an_outsider_is_refused_with_4403_and_sees_nothing(
    server_url: str, client: Any, people: dict[str, Any]
) -> None:
    outsider = session_cookie(people["outsider"])
    with open_tail(server_url, outsider) as ws:
        assert close_code(ws) == 4403
    # Their own project's socket stays open but never carries acme's rows.
    with (
        open_tail(server_url, outsider, slug="other") as ws,
        open_tail(server_url, session_cookie(people["owner"])) as own,
    ):
        trace_id = chat(client, "for acme only")
        wait_for(own, trace_id)  # delivered to acme's members...
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # ...and nothing to the outsider's socket


def test_unknown_project_answers_like_a_foreign_one(server_url: str, people: dict[str, Any]) -> None:
    with open_tail(server_url, session_cookie(people["owner"]), slug="no-such-project") as ws:
        assert close_code(ws) == 4403


def test_anonymous_and_forged_sessions_are_refused(server_url: str, people: dict[str, Any]) -> None:
    with open_tail(server_url, None) as ws:
        assert close_code(ws) == 4401
    with open_tail(server_url, f"{settings.SESSION_COOKIE_NAME}=not-a-session") as ws:
        assert close_code(ws) == 4401


def test_another_sites_origin_is_refused(server_url: str, people: dict[str, Any]) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        open_tail(server_url, session_cookie(people["owner"]), origin="https://evil.example")


def test_the_live_toggle_fragment(server_url: str, people: dict[str, Any]) -> None:
    member = Client()
    member.force_login(people["member"])
    on = member.get("/projects/acme/traces/live?on=1", headers={"HX-Request": "true"})
    assert on.status_code == 200
    assert b'ws-connect="/ws/projects/acme/traces"' in on.content and b'aria-pressed="true"' in on.content
    filtered = member.get("/projects/acme/traces/live?on=1&model=gpt-4o&range=1h", headers={"HX-Request": "true"})
    assert b'ws-connect="/ws/projects/acme/traces?model=gpt-4o&amp;range=1h"' in filtered.content
    assert b"on=0&amp;model=gpt-4o&amp;range=1h" in filtered.content  # switching off keeps the filters
    off = member.get("/projects/acme/traces/live?on=0", headers={"HX-Request": "true"})
    assert b"ws-connect" not in off.content and b'aria-pressed="false"' in off.content
    outsider = Client()
    outsider.force_login(people["outsider"])
    assert outsider.get("/projects/acme/traces/live?on=1").status_code == 404


def test_publish_never_raises_and_summarises(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    record = {
        "trace_id": "00000000-0000-0000-0000-000000000001",
        "timestamp": 1_700_000_000.0,
        "project_id": 7,
        "resolved_model": "openai/gpt-4o-mini",
        "provider": "openai",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "request_messages": '[{"role":"system","content":"s"},{"role":"user","content":"  hello\\n  world  "}]',
    }
    s = live.summary(record)
    assert s["prompt_preview"] == "hello world" and s["tokens"] == 7 and s["model"] == "openai/gpt-4o-mini"
    assert s["cost_total_usd"] is None  # not priced: unknown, never 0
    monkeypatch.setattr(live, "_can_deliver", lambda layer: True)
    live.publish([{"project_id": 7}])  # a broken record: logged, not raised
    assert "could not publish" in caplog.text
    assert live.prompt_preview("x" * 500).endswith("…") and len(live.prompt_preview("x" * 500)) == live.PREVIEW_CHARS


def test_the_fallback_row_escapes_and_has_every_column(monkeypatch: pytest.MonkeyPatch, people: dict[str, Any]) -> None:
    from traces import consumers

    monkeypatch.setattr(consumers, "ROW_TEMPLATES", ["traces/_live_row.html"])
    row = {
        "trace_id": "t-1",
        "timestamp": "2026-01-02T03:04:05+00:00",
        "model": "openai/gpt-4o-mini",
        "provider": "openai",
        "status": 502,
        "latency_ms": 12.4,
        "cost_total_usd": None,
        "tokens": 9,
        "prompt_preview": "<script>x</script>",
    }
    html = consumers.render_rows([row], people["project"])
    assert html.startswith('<tbody hx-swap-oob="afterbegin:#trace-rows">')
    assert html.endswith('</tbody><p id="no-traces" hx-swap-oob="delete"></p>')
    # Later pushes on the same socket leave it alone: deleting it twice is an htmx console error.
    assert "no-traces" not in consumers.render_rows([row], people["project"], first=False)
    for text in ("03:04:05", "openai/gpt-4o-mini", ">502<", "12 ms", ">9<", "&lt;script&gt;x&lt;/script&gt;"):
        assert text in html
    assert "<script>" not in html
