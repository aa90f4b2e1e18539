""" "Test connection" for a stored provider credential: one real, cheap, read-only call (the
provider's model list) with the stored key, from the dashboard or the admin.

Not the hot path, so plain sync httpx with a 10 s timeout. `trust_env=False` like the gateway's
aiohttp pool, so the test goes out the way traffic does. Which URL and headers each provider
needs lives in the `_PROBES` table below (OpenAI-compatible providers reuse their own `url()` and
`headers()`); providers without a list endpoint report an unknown state instead of pretending.
The key never appears in a result: details are redacted with the credential's secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.fernet import InvalidToken

from .crypto import decrypt, open_options
from .models import ProviderCredential
from .providers import PROVIDERS
from .providers.anthropic import API_VERSION as ANTHROPIC_VERSION
from .providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_BASE
from .providers.base import Credential, redact
from .providers.openai import AzureOpenAIProvider, OpenAIProvider

TIMEOUT_S = 10.0
MAX_MODELS = 200  # kept in a result; the page shows the first few
MAX_MESSAGE = 200  # characters of an upstream error message quoted in `detail`


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool | None  # None: the provider cannot be tested without a model call (unknown)
    status: int | None  # the upstream's HTTP status; None when no HTTP answer came back
    detail: str
    latency_ms: float
    models: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return "unknown" if self.ok is None else "ok" if self.ok else "failed"


@dataclass(frozen=True)
class Probe:
    """How to list a provider's models: URL and headers from the credential, names from the JSON."""

    url: Callable[[Credential], str]
    headers: Callable[[Credential], dict[str, str]]
    names: Callable[[Any], list[str]]


def _strip(base: str, *suffixes: str) -> str:
    """A base URL without a trailing API-version segment the probe adds itself."""
    base = base.rstrip("/")
    for suffix in suffixes:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _ids(data: Any) -> list[str]:
    """OpenAI's and Anthropic's list: {"data": [{"id": ...}, ...]}."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("no `data` list")
    return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]


def _names(data: Any) -> list[str]:
    """Gemini's and Cohere's list: {"models": [{"name": "models/gemini-2.0-flash" | "command-r"}]}."""
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("no `models` list")
    return [str(m["name"]).removeprefix("models/") for m in items if isinstance(m, dict) and "name" in m]


def _azure_url(cred: Credential) -> str:
    version = cred.option("api_version", AzureOpenAIProvider.DEFAULT_API_VERSION)
    return f"{_strip(cred.base_url, '/openai')}/openai/models?api-version={version}"


def _keyed(header: str, prefix: str = "") -> Callable[[Credential], dict[str, str]]:
    def headers(cred: Credential) -> dict[str, str]:
        return {header: f"{prefix}{cred.api_key}"} if cred.api_key else {}

    return headers


_DEFAULT_BASES = {
    "anthropic": ANTHROPIC_BASE,
    "gemini": "https://generativelanguage.googleapis.com",
    "cohere": "https://api.cohere.com",
}

_PROBES: dict[str, Probe] = {
    "azure": Probe(_azure_url, _keyed("api-key"), _ids),
    "anthropic": Probe(
        lambda c: f"{_strip(c.base_url, '/v1')}/v1/models?limit=100",
        lambda c: {"anthropic-version": ANTHROPIC_VERSION, **_keyed("x-api-key")(c)},
        _ids,
    ),
    "gemini": Probe(
        lambda c: f"{_strip(c.base_url, '/v1beta', '/v1')}/v1beta/models?pageSize=100",
        _keyed("x-goog-api-key"),
        _names,
    ),
    "cohere": Probe(
        lambda c: f"{_strip(c.base_url, '/v1', '/v2')}/v1/models?page_size=100",
        _keyed("Authorization", "Bearer "),
        _names,
    ),
}

# Providers whose test needs no network call or cannot be made without one that costs money.
_NOT_TESTABLE = {
    "bedrock": "not testable without a model call; send a chat request",
}


def _probe(provider_name: str) -> Probe | None:
    if provider_name in _PROBES:
        return _PROBES[provider_name]
    provider = PROVIDERS.get(provider_name)
    if not isinstance(provider, OpenAIProvider):
        return None
    compatible: OpenAIProvider = provider  # every OpenAI-compatible spec, custom included
    return Probe(lambda c: compatible.url(c, "", "models"), compatible.headers, _ids)


def _where(url: str) -> str:
    """host[:port] of a URL, without any user:password part, for messages."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else url


def _message(response: httpx.Response) -> str:
    """The upstream's error message from the usual bodies (OpenAI, Anthropic, Gemini, Cohere)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:MAX_MESSAGE].strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:MAX_MESSAGE]
        if isinstance(err, str):
            return err[:MAX_MESSAGE]
        if data.get("message"):
            return str(data["message"])[:MAX_MESSAGE]
    return ""


def _failure(provider: str, response: httpx.Response) -> str:
    status, message = response.status_code, _message(response)
    rejected = status in (401, 403) or (status == 400 and "api key" in message.lower())  # Gemini: 400
    if rejected:
        head = f"{provider} rejected the key (HTTP {status})"
    elif status == 404:
        return "the model list was not found (HTTP 404): check the base URL"
    elif status == 429:
        head = "rate limited (HTTP 429): the key may be fine, retry later"
    else:
        head = f"HTTP {status}"
    return f"{head}: {message}" if message else head


def _stored(credential: ProviderCredential) -> Credential:
    options = open_options(credential.options or {})
    return Credential(
        decrypt(credential.api_key_encrypted) or None,
        credential.base_url.rstrip("/"),
        options,
        credential.label,
        credential.weight,
    )


def credential_test(*, credential: ProviderCredential) -> ConnectionResult:
    """List the provider's models with the stored credential; never raises for upstream trouble."""
    name = credential.provider
    if name == "local":
        models = list(PROVIDERS["local"].known_models) if "local" in PROVIDERS else []
        return ConnectionResult(True, None, "in-process model: nothing to connect to", 0.0, models)
    if name in _NOT_TESTABLE:
        return ConnectionResult(None, None, _NOT_TESTABLE[name], 0.0)
    probe = _probe(name)
    if probe is None:
        return ConnectionResult(None, None, f"no connection test for provider `{name}`", 0.0)
    try:
        cred = _stored(credential)
    except InvalidToken:
        return ConnectionResult(
            False, None, "the stored key cannot be decrypted (was OPENTRACY_ENCRYPTION_KEY changed?)", 0.0
        )
    if not cred.base_url:
        if name in ("azure", "custom"):
            return ConnectionResult(False, None, f"`{name}` needs a base URL", 0.0)
        if name in _DEFAULT_BASES:
            cred = Credential(cred.api_key, _DEFAULT_BASES[name], cred.options, cred.label, cred.weight)
    return _call(name, probe, cred)


def _call(name: str, probe: Probe, cred: Credential) -> ConnectionResult:
    secrets = cred.secrets()
    url = probe.url(cred)
    start = perf_counter()

    def result(ok: bool, status: int | None, detail: str, models: list[str] | None = None) -> ConnectionResult:
        latency = round((perf_counter() - start) * 1000, 1)
        return ConnectionResult(ok, status, redact(detail, secrets), latency, models or [])

    try:
        with httpx.Client(timeout=TIMEOUT_S, trust_env=False, follow_redirects=False) as client:
            response = client.get(url, headers=probe.headers(cred))
    except httpx.TimeoutException as exc:
        return result(False, None, f"timed out after {TIMEOUT_S:g} s ({type(exc).__name__})")
    except httpx.ConnectError as exc:
        return result(False, None, f"could not connect to {_where(url)}: ConnectError ({exc})")
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return result(False, None, f"invalid base URL: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return result(False, None, f"request to {_where(url)} failed: {type(exc).__name__} ({exc})")
    if response.status_code != 200:
        return result(False, response.status_code, _failure(name, response))
    try:
        models = probe.names(response.json())
    except ValueError:
        return result(False, 200, "HTTP 200 but the answer is not a model list: check the base URL")
    count = f"{len(models)} model{'s' if len(models) != 1 else ''}"
    return result(True, 200, f"connected: {count} listed", models[:MAX_MODELS])
