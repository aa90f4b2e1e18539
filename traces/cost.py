"""Cost in USD of one request: per-model overrides from the DB first, else genai-prices.

Runs in the trace writer's thread, never on the request path. A model nobody has a price for
gives (None, None, None): unknown, not free.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from decimal import Decimal

from genai_prices import Usage, calc_price
from genai_prices.types import TieredPrices

from gateway.models import ModelPrice

Cost = tuple[float | None, float | None, float | None]
Pricer = Callable[[int, int, int], Cost]  # (prompt, completion, cached tokens) -> Cost
UNKNOWN: Cost = (None, None, None)
MTOK = 1_000_000
OVERRIDES_TTL_S = 30.0

_overrides: dict[tuple[int | None, str], ModelPrice] = {}
_loaded_at = 0.0


def _override(project_id: int, model: str) -> ModelPrice | None:
    global _overrides, _loaded_at
    if time.monotonic() - _loaded_at > OVERRIDES_TTL_S:
        _overrides = {(p.project_id, p.model): p for p in ModelPrice.objects.all()}
        _loaded_at = time.monotonic()
    return _overrides.get((project_id, model)) or _overrides.get((None, model))


def _catalog_price(provider: str, model: str, usage: Usage) -> Cost:
    try:
        calc = calc_price(usage, model_ref=model, provider_id=provider)
    except LookupError:
        return UNKNOWN
    return float(calc.input_price), float(calc.output_price), float(calc.total_price)


@functools.lru_cache(maxsize=4096)
def _flat_rates(provider: str, model: str, hour: int) -> tuple[float, float, float] | None:
    """USD per token (input, cached input, output) when the model's prices are flat, so a trace
    costs three multiplications instead of a full genai-prices calculation (~50 µs, most of the
    writer's time per row). None for tiered or unknown prices. Keyed by the hour: prices change."""
    try:
        calc = calc_price(Usage(input_tokens=MTOK, output_tokens=MTOK), model_ref=model, provider_id=provider)
    except LookupError:
        return None
    if any(isinstance(v, TieredPrices) for v in vars(calc.model_price).values()):
        return None
    all_cached = calc_price(Usage(input_tokens=MTOK, cache_read_tokens=MTOK), model_ref=model, provider_id=provider)
    return float(calc.input_price) / MTOK, float(all_cached.input_price) / MTOK, float(calc.output_price) / MTOK


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
        exact_in = (Decimal(prompt - cached) * price.input_per_mtok + Decimal(cached) * cached_rate) / Decimal(MTOK)
        exact_out = Decimal(completion) * price.output_per_mtok / Decimal(MTOK)
        return float(exact_in), float(exact_out), float(exact_in + exact_out)
    rates = _flat_rates(provider, model, int(time.time() // 3600))
    if rates is None:
        return _catalog_price(
            provider, model, Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached or None)
        )
    per_input, per_cached, per_output = rates
    inp = (prompt - cached) * per_input + cached * per_cached
    out = completion * per_output
    return inp, out, inp + out


def pricer(*, project_id: int, provider: str, model: str) -> Pricer:
    """compute_cost for one project and model, its price looked up once: the trace writer prices a
    batch with one lookup per model, then three multiplications per trace when the price is flat
    (the same arithmetic as compute_cost). Overrides and tiered prices go through compute_cost per
    trace; a model with no price at all costs UNKNOWN without a catalogue call per trace."""
    if not provider or not model:
        return lambda prompt, completion, cached: UNKNOWN
    rates = None
    if provider != "local" and _override(project_id, f"{provider}/{model}") is None:
        rates = _flat_rates(provider, model, int(time.time() // 3600))
        if rates is None and _catalog_price(provider, model, Usage(input_tokens=1)) == UNKNOWN:
            return lambda prompt, completion, cached: UNKNOWN
    if rates is None:  # local, an override, or a tiered price
        return lambda prompt, completion, cached: compute_cost(
            project_id=project_id, provider=provider, model=model, prompt=prompt, completion=completion, cached=cached
        )
    per_input, per_cached, per_output = rates

    def flat(prompt: int, completion: int, cached: int) -> Cost:
        inp = (prompt - cached) * per_input + cached * per_cached
        out = completion * per_output
        return inp, out, inp + out

    return flat
