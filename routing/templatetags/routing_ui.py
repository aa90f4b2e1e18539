"""Filters for the Routing page: heat-map colours and per-1k-request costs."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def error_bg(error: Any) -> str:
    """Green (no error) through amber to red (every answer wrong), light enough to read text on."""
    try:
        e = min(max(float(error), 0.0), 1.0)
    except (TypeError, ValueError):
        return "transparent"
    return f"hsl({round(120 * (1 - e))}, 70%, {round(88 - 10 * e)}%)"


@register.filter
def per_1k(cost_usd: Any) -> float | None:
    """The cost of one request as the cost of 1,000 of them."""
    return None if cost_usd is None or cost_usd == "" else float(cost_usd) * 1000
