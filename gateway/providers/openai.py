"""OpenAI's Chat Completions wire protocol: OpenAI itself, the many providers that speak it
(Mistral, Groq, Together, ...), self-hosted servers (Ollama, vLLM), any custom base URL, and Azure
OpenAI (same bodies, deployment URLs and an `api-key` header)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError, bad_gateway

from .base import Credential, env_credential, redact
from .http import parse_event, post_json, post_sse

# Engine-level fields that are recorded on the trace, not sent upstream.
ENGINE_FIELDS = ("metadata", "opentracy")


@dataclass(frozen=True)
class Spec:
    name: str
    default_base: str
    key_var: str
    base_var: str = ""
    model_prefixes: tuple[str, ...] = ()
    known_models: tuple[str, ...] = ()
    # Providers that reject `stream_options` send usage in their last chunk anyway.
    stream_options: bool = True
    # Only OpenAI knows `max_completion_tokens` for sure; the others get `max_tokens`.
    max_completion_tokens: bool = False


SPECS = (
    Spec(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-"),
        ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o4-mini", "text-embedding-3-small"),
        max_completion_tokens=True,
    ),
    Spec(
        "mistral",
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        "MISTRAL_BASE_URL",
        ("mistral-", "magistral-", "codestral-", "ministral-", "pixtral-", "open-mistral-"),
        ("mistral-large-latest", "mistral-small-latest", "codestral-latest", "mistral-embed"),
        stream_options=False,
    ),
    Spec(
        "groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        "GROQ_BASE_URL",
        known_models=("llama-3.3-70b-versatile", "llama-3.1-8b-instant"),
    ),
    Spec("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
    Spec("fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", "FIREWORKS_BASE_URL"),
    Spec(
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
        "DEEPSEEK_BASE_URL",
        ("deepseek-",),
        ("deepseek-chat", "deepseek-reasoner"),
    ),
    Spec("xai", "https://api.x.ai/v1", "XAI_API_KEY", "XAI_BASE_URL", ("grok-",), ("grok-4", "grok-3-mini")),
    Spec(
        "perplexity",
        "https://api.perplexity.ai",
        "PERPLEXITY_API_KEY",
        "PERPLEXITY_BASE_URL",
        ("sonar",),
        ("sonar", "sonar-pro"),
        stream_options=False,
    ),
    Spec("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", "CEREBRAS_BASE_URL"),
    Spec("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
    # Self-hosted: configured by their base URL; a key is optional.
    Spec("ollama", "http://localhost:11434/v1", "OLLAMA_API_KEY", "OLLAMA_BASE_URL"),
    Spec("vllm", "http://localhost:8000/v1", "VLLM_API_KEY", "VLLM_BASE_URL"),
    # Any other OpenAI-compatible server, registered per project with a label: `custom@mine/model`.
    Spec("custom", "", "", ""),
)


class OpenAIProvider:
    """One OpenAI-compatible provider, described by its Spec."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.name = spec.name
        self.model_prefixes = spec.model_prefixes
        self.known_models = spec.known_models
        self.env_hint = (
            f"{spec.key_var} (or {spec.base_var})" if spec.key_var else "a credential with a base URL in the admin"
        )

    def credential(self, stored: Credential | None) -> Credential | None:
        if not self.spec.key_var:  # custom: only what a project registered
            return stored if stored is not None and stored.base_url else None
        return env_credential(stored, self.spec.key_var, self.spec.base_var, self.spec.default_base)

    def check(self, body: dict[str, Any]) -> None:
        return None

    def url(self, cred: Credential, model: str, path: str) -> str:
        return f"{cred.base_url or self.spec.default_base}/{path}"

    def headers(self, cred: Credential) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if cred.api_key:
            headers["Authorization"] = f"Bearer {cred.api_key}"
        return headers

    def _body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        upstream = {k: v for k, v in body.items() if k not in ENGINE_FIELDS}
        upstream["model"] = model
        if not self.spec.max_completion_tokens and "max_completion_tokens" in upstream:
            limit = upstream.pop("max_completion_tokens")
            upstream.setdefault("max_tokens", limit)
        return upstream

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        url = self.url(cred, model, "chat/completions")
        data = await post_json(self.name, url, self._body(body, model), self.headers(cred), cred.secrets())
        if not isinstance(data.get("choices"), list):
            raise bad_gateway(f"Provider `{self.name}` returned a response without choices.")
        return data

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        upstream = self._body(body, model)
        if self.spec.stream_options:
            # Always ask for usage so a streamed request's cost is exact; the gateway strips the
            # usage chunk again when the caller did not ask for it.
            upstream["stream_options"] = {**(upstream.get("stream_options") or {}), "include_usage": True}
        else:
            upstream.pop("stream_options", None)
        url = self.url(cred, model, "chat/completions")
        done = False
        async for _event, data in post_sse(self.name, url, upstream, self.headers(cred), cred.secrets()):
            if data == b"[DONE]":
                done = True
                break
            chunk = parse_event(self.name, data)
            if "error" in chunk:
                err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                message = redact(str(err.get("message", "")), cred.secrets())
                raise GatewayError(502, f"{self.name}: {message}", type="server_error", code="upstream_error")
            yield chunk
        if not done:
            raise bad_gateway(f"Provider `{self.name}` ended the stream early.", code="upstream_stream_broken")

    async def embed(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        """POST /embeddings; returns OpenAI's `list` object of embeddings."""
        url = self.url(cred, model, "embeddings")
        data = await post_json(self.name, url, self._body(body, model), self.headers(cred), cred.secrets())
        if not isinstance(data.get("data"), list):
            raise bad_gateway(f"Provider `{self.name}` returned embeddings without data.")
        return data


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: the model name is the deployment's; `api-key` header; `api-version` query."""

    DEFAULT_API_VERSION = "2024-10-21"

    def __init__(self) -> None:
        super().__init__(Spec("azure", "", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", max_completion_tokens=True))

    def credential(self, stored: Credential | None) -> Credential | None:
        cred = env_credential(stored, "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "")
        if cred is None or not cred.base_url:
            return None
        if stored is None:  # from the environment: the API version too
            version = os.environ.get("AZURE_OPENAI_API_VERSION") or self.DEFAULT_API_VERSION
            cred = Credential(cred.api_key, cred.base_url, {"api_version": version})
        return cred

    def url(self, cred: Credential, model: str, path: str) -> str:
        version = cred.option("api_version", self.DEFAULT_API_VERSION)
        return f"{cred.base_url}/openai/deployments/{model}/{path}?api-version={version}"

    def headers(self, cred: Credential) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if cred.api_key:
            headers["api-key"] = cred.api_key
        return headers
