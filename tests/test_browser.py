"""Browser tests: the dashboard in headless Debian Chromium (Playwright), against the live engine."""

from __future__ import annotations

from typing import Any

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
