"""Provider registry: one module per wire protocol."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import Provider
from .local import LocalProvider
from .openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OpenAIProvider(), AnthropicProvider(), LocalProvider())}


def get_provider(name: str) -> Provider | None:
    return PROVIDERS.get(name)
