"""Provider registry: one module per wire protocol."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import Provider
from .bedrock import BedrockProvider
from .cohere import CohereProvider
from .gemini import GeminiProvider
from .local import LocalProvider
from .openai import SPECS, AzureOpenAIProvider, OpenAIProvider

_ALL: tuple[Provider, ...] = (
    *(OpenAIProvider(spec) for spec in SPECS),
    AzureOpenAIProvider(),
    AnthropicProvider(),
    BedrockProvider(),
    CohereProvider(),
    GeminiProvider(),
    LocalProvider(),
)
PROVIDERS: dict[str, Provider] = {p.name: p for p in _ALL}


def get_provider(name: str) -> Provider | None:
    return PROVIDERS.get(name)
