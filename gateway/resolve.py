"""Model addressing: `provider/model`, a bare model name mapped to its provider, or an alias."""

from __future__ import annotations

from . import cache
from .errors import model_not_found
from .providers import PROVIDERS
from .providers.base import Target


def parse_target(name: str) -> Target | None:
    """`openai/gpt-4o` → Target(openai, gpt-4o); `gpt-4o` → the provider owning that prefix."""
    provider, sep, model = name.partition("/")
    if sep:
        return Target(provider, model) if provider in PROVIDERS and model else None
    for p in PROVIDERS.values():
        if name.startswith(p.model_prefixes):
            return Target(p.name, name)
    return None


async def resolve(project_id: int, requested: str) -> tuple[Target, str]:
    """The target for a requested model name, and the alias used ('' if none)."""
    target_name = (await cache.aliases(project_id)).get(requested)
    alias = requested if target_name is not None else ""
    target = parse_target(target_name or requested)
    if target is None:
        raise model_not_found(requested)
    return target, alias
