"""Trace costs: the writer's fast path agrees with genai-prices' full calculation."""

from __future__ import annotations

import pytest
from genai_prices import Usage, calc_price

from traces.cost import UNKNOWN, compute_cost


@pytest.mark.parametrize(
    ("provider", "model", "prompt", "completion", "cached"),
    [
        ("openai", "gpt-4o-mini", 1234, 567, 0),
        ("openai", "gpt-4o", 5000, 100, 2048),
        ("anthropic", "claude-haiku-4-5", 900, 80, 300),
        ("google", "gemini-1.5-pro", 300_000, 1000, 0),  # tiered above 128k prompt tokens
    ],
)
@pytest.mark.django_db
def test_matches_genai_prices(provider: str, model: str, prompt: int, completion: int, cached: int) -> None:
    expected = calc_price(
        Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached or None),
        model_ref=model,
        provider_id=provider,
    )
    got = compute_cost(
        project_id=1, provider=provider, model=model, prompt=prompt, completion=completion, cached=cached
    )
    assert got == pytest.approx(
        (float(expected.input_price), float(expected.output_price), float(expected.total_price)), rel=1e-9
    )


@pytest.mark.django_db
def test_unknown_model_is_unknown_and_local_is_free() -> None:
    assert compute_cost(project_id=1, provider="openai", model="no-such", prompt=1, completion=1, cached=0) == UNKNOWN
    assert compute_cost(project_id=1, provider="local", model="x", prompt=9, completion=9, cached=0) == (0.0, 0.0, 0.0)
