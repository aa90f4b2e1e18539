"""Browser tests: the dashboard in headless Debian Chromium (Playwright), against the live engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_api_docs_render_offline(logged_in_page: Any, server_url: str) -> None:
    """Swagger UI comes from our static files: every request the page makes stays on this server."""
    page = logged_in_page
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto("/api/docs/")
    page.wait_for_selector("text=OpenTracy engine API")
    page.get_by_text("/api/traces/export", exact=True).first.wait_for()
    assert requested and all(url.startswith(server_url) for url in requested)


def test_a_new_user_sees_traffic_arrive_then_opens_filters_and_exports_it(
    chromium: Any, server_url: str, providers: dict[str, Any]
) -> None:
    page = chromium.new_context(base_url=server_url).new_page()
    # Log in through the form (a member, not staff), landing where the link pointed.
    page.goto("/projects/acme/overview")
    page.wait_for_url("**/accounts/login/?next=/projects/acme/overview")
    page.get_by_label("Username or e-mail").fill("owner@example.com")
    page.get_by_label("Password").fill("pw-owner-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/projects/acme/overview")
    # Empty state: the exact base_url to paste into an OpenAI client.
    base_url = page.locator("#base-url").inner_text()
    assert base_url == f"{server_url}/v1"
    # The key, from the link the empty state gives: created in Settings, shown once.
    page.get_by_role("link", name="Settings → API keys").click()
    page.locator("#keys").get_by_label("Name").fill("my-app")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("ot-")
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)

    # Live tail on, then traffic through the OpenAI SDK appears on top without a reload.
    page.goto("/projects/acme/traces")
    assert page.locator("#no-traces").is_visible()
    page.get_by_role("button", name="Live: off").click()
    page.wait_for_selector("[ws-connect]", state="attached")
    page.wait_for_function("() => document.querySelector('#live-tail [aria-pressed=true]') !== null")
    page.wait_for_timeout(500)  # the socket joins its group right after connecting
    hostile = "<script>window.pwned = 1</script> what is my balance?"
    first = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": hostile}]
    )
    second = client.chat.completions.with_raw_response.create(
        model="anthropic/claude-haiku-4-5", messages=[{"role": "user", "content": "hello there"}]
    )
    ids = [r.headers["x-opentracy-trace-id"] for r in (first, second)]
    for trace_id in ids:
        page.wait_for_selector(f"#trace-{trace_id}", timeout=15_000)
    assert page.url.endswith("/projects/acme/traces")  # no reload happened
    assert page.locator("#no-traces").count() == 0  # the empty table's line went with the first row
    row = page.locator(f"#trace-{ids[0]}")
    assert "<script>window.pwned = 1</script>" in row.inner_text()  # shown as text...
    assert page.evaluate("() => window.pwned") is None  # ...never run

    # Open the trace: the conversation, escaped, and the copy-as-cURL text.
    row.locator("td.preview a").click()
    page.wait_for_url(f"**/traces/{ids[0]}")
    assert hostile in page.locator("main").inner_text()
    assert page.evaluate("() => window.pwned") is None

    # Filter by model through the form: the filter lands in the URL and the table follows it.
    page.goto("/projects/acme/traces")
    page.locator("input[name=model]").fill("anthropic/claude-haiku-4-5")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**model=anthropic%2Fclaude-haiku-4-5**")
    shown = page.locator("#trace-rows tr.trace-row")
    assert shown.count() == 1 and shown.first.get_attribute("id") == f"trace-{ids[1]}"

    # Export what the filter shows.
    with page.expect_download() as download:
        page.get_by_role("link", name="JSONL").click()
    lines = [orjson.loads(line) for line in Path(download.value.path()).read_bytes().splitlines()]
    assert [t["trace_id"] for t in lines] == [ids[1]]
    page.context.close()
