"""What every provider module offers. The gateway speaks OpenAI's chat format internally: a
provider takes an OpenAI request body and answers with OpenAI completion dicts or stream chunks,
translating to and from its own wire protocol."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gateway.crypto import is_secret_option


@dataclass(frozen=True)
class Credential:
    api_key: str | None
    base_url: str
    # Provider-specific settings: Azure's `api_version`, Bedrock's `region` and `access_key_id`, ...
    options: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    # The stored credential's label ('' for the environment's); several labels of one provider are
    # load-balanced by weight.
    label: str = ""
    weight: int = 1

    def secrets(self) -> tuple[str, ...]:
        """Values that must never leave the engine (scrubbed from errors and traces)."""
        values = [self.api_key, *(v for k, v in self.options.items() if is_secret_option(k))]
        return tuple(v for v in values if v)

    def option(self, name: str, default: str = "") -> str:
        return self.options.get(name) or default


@dataclass(frozen=True)
class Target:
    provider: str
    model: str
    # Pins one stored credential (`openai@eu/gpt-4o`); empty load-balances over all of them.
    label: str = ""

    @property
    def name(self) -> str:
        at = f"@{self.label}" if self.label else ""
        return f"{self.provider}{at}/{self.model}"


class Provider(Protocol):
    name: str
    # Bare model names starting with one of these map to this provider (`gpt-4o` → openai).
    model_prefixes: tuple[str, ...]
    # Shown by GET /v1/models when the provider is configured.
    known_models: tuple[str, ...]
    # How to configure it from the environment, for the "not configured" error.
    env_hint: str

    def credential(self, stored: Credential | None) -> Credential | None:
        """The credential to use: the project's stored one, else the environment's; None if absent."""
        ...

    def check(self, body: dict[str, Any]) -> None:
        """Raise GatewayError(422) for parameters this provider cannot honour."""
        ...

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        """One OpenAI chat.completion object."""
        ...

    def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        """OpenAI chat.completion.chunk objects; the last one carries `usage`."""
        ...


def env_credential(stored: Credential | None, key_var: str, base_var: str, default_base: str) -> Credential | None:
    """The project's stored credential, else one from the environment; None when neither a key nor
    a base URL is set (a keyless base URL serves OpenAI-compatible servers such as vLLM)."""
    if stored is not None:
        return stored if stored.base_url else replace(stored, base_url=default_base.rstrip("/"))
    key = os.environ.get(key_var) or None
    base = os.environ.get(base_var) or ""
    if key is None and not base:
        return None
    return Credential(key, (base or default_base).rstrip("/"))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if len(secret) >= 4:  # a one-letter "secret" would garble every message
            text = text.replace(secret, "***")
    return text
