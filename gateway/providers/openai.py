"""OpenAI's Chat Completions wire protocol: OpenAI itself and any OpenAI-compatible base URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import GatewayError, bad_gateway

from .base import Credential, env_credential, redact
from .http import parse_event, post_json, post_sse

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Engine-level fields that are recorded on the trace, not sent upstream.
ENGINE_FIELDS = ("metadata",)


class OpenAIProvider:
    name = "openai"
    model_prefixes: tuple[str, ...] = ("gpt-", "chatgpt-", "o1", "o3", "o4")
    env_hint = "OPENAI_API_KEY (or OPENAI_BASE_URL)"
    known_models: tuple[str, ...] = ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o4-mini")

    def credential(self, stored: Credential | None) -> Credential | None:
        return env_credential(stored, "OPENAI_API_KEY", "OPENAI_BASE_URL", DEFAULT_BASE_URL)

    def check(self, body: dict[str, Any]) -> None:
        return None

    def _request(self, body: dict[str, Any], model: str, cred: Credential) -> tuple[dict[str, Any], dict[str, str]]:
        upstream = {k: v for k, v in body.items() if k not in ENGINE_FIELDS}
        upstream["model"] = model
        headers = {"Content-Type": "application/json"}
        if cred.api_key:
            headers["Authorization"] = f"Bearer {cred.api_key}"
        return upstream, headers

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        upstream, headers = self._request(body, model, cred)
        data = await post_json(self.name, f"{cred.base_url}/chat/completions", upstream, headers, cred.secrets())
        if not isinstance(data.get("choices"), list):
            raise bad_gateway("Provider `openai` returned a response without choices.")
        return data

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        upstream, headers = self._request(body, model, cred)
        # Always ask for usage so a streamed request's cost is exact; the gateway strips the
        # usage chunk again when the caller did not ask for it.
        upstream["stream_options"] = {**(upstream.get("stream_options") or {}), "include_usage": True}
        url = f"{cred.base_url}/chat/completions"
        done = False
        async for _event, data in post_sse(self.name, url, upstream, headers, cred.secrets()):
            if data == b"[DONE]":
                done = True
                break
            chunk = parse_event(self.name, data)
            if "error" in chunk:
                err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                message = redact(str(err.get("message", "")), cred.secrets())
                raise GatewayError(502, f"openai: {message}", type="server_error", code="upstream_error")
            yield chunk
        if not done:
            raise bad_gateway("Provider `openai` ended the stream early.", code="upstream_stream_broken")
