"""Cost in USD of one request: per-model overrides from the DB first, else genai-prices.

Runs in the trace writer's thread, never on the request path. A model nobody has a price for
gives (None, None, None): unknown, not free.
"""

from __future__ import annotations

import time
from decimal import Decimal

from genai_prices import Usage, calc_price

from gateway.models import ModelPrice

Cost = tuple[float | None, float | None, float | None]
UNKNOWN: Cost = (None, None, None)
MTOK = Decimal(1_000_000)
OVERRIDES_TTL_S = 30.0

_overrides: dict[tuple[int | None, str], ModelPrice] = {}
_loaded_at = 0.0


def _override(project_id: int, model: str) -> ModelPrice | None:
    global _overrides, _loaded_at
    if time.monotonic() - _loaded_at > OVERRIDES_TTL_S:
        _overrides = {(p.project_id, p.model): p for p in ModelPrice.objects.all()}
        _loaded_at = time.monotonic()
    return _overrides.get((project_id, model)) or _overrides.get((None, model))


def invalidate_overrides() -> None:
    global _loaded_at
    _loaded_at = 0.0


def compute_cost(*, project_id: int, provider: str, model: str, prompt: int, completion: int, cached: int) -> Cost:
    if not provider or not model:
        return UNKNOWN
    if provider == "local":
        # Runs on the engine's own hardware: no per-token bill.
        return (0.0, 0.0, 0.0)
    price = _override(project_id, f"{provider}/{model}")
    if price is not None:
        cached_rate = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
        inp = (Decimal(prompt - cached) * price.input_per_mtok + Decimal(cached) * cached_rate) / MTOK
        out = Decimal(completion) * price.output_per_mtok / MTOK
        return float(inp), float(out), float(inp + out)
    try:
        calc = calc_price(
            Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached or None),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        return UNKNOWN
    return float(calc.input_price), float(calc.output_price), float(calc.total_price)
