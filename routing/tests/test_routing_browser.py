"""The Routing page in headless Debian Chromium (Playwright) against the live engine: the charts
draw, the λ slider shows the curve's predicted error and cost client-side, and saving stores λ."""

from __future__ import annotations

from typing import Any

import pytest

from routing.models import RoutingPolicy
from routing.services import policy_create

from .policy_support import CHEAP, DEAR, routed, set_prices, unique, write

pytestmark = pytest.mark.django_db(transaction=True)


def test_slider_reads_the_curve_and_saving_stores_lambda(logged_in_page: Any, people: dict[str, Any]) -> None:
    set_prices(people["project"])
    policy = policy_create(project=people["project"], user=people["owner"],
                           data={"name": unique("ui"), "candidates": [DEAR, CHEAP], "lam": 0.05})  # fmt: skip
    write([routed(people["project"].id, policy.name, CHEAP, cost=None, hours_ago=h) for h in (0, 1, 3)])
    page = logged_in_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"/projects/acme/routing/{policy.pk}")
    page.wait_for_selector("#chart-curve canvas")
    page.wait_for_selector("#chart-traffic canvas")
    assert page.locator("#heatmap td.cell").count() > 0
    points = page.evaluate("JSON.parse(document.getElementById('routing-curve').textContent).points")
    cheapest = max(points, key=lambda p: p["lam"])
    # All the way left is "cheapest": the largest λ, its predicted error and cost per 1k requests.
    page.locator("#lam-slider").fill("0")
    readout = page.locator("#lam-readout").inner_text()
    assert readout.startswith(f"λ = {cheapest['lam']:g} ") and f"{cheapest['error'] * 100:.1f}%" in readout
    assert "per 1k requests" in readout and page.locator("#lam-input").input_value() == f"{cheapest['lam']:g}"
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector(".messages li.success")
    assert RoutingPolicy.objects.get(pk=policy.pk).lam == cheapest["lam"]
    assert errors == []
