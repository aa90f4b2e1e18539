"""POST /v1/embeddings: OpenAI's embeddings API over any provider that offers embeddings (the
OpenAI-compatible ones, Azure, the local MiniLM model), with the same keys, aliases, retries,
fallbacks, limits and traces as chat."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

import orjson

from .chat import ChatCall, _usage
from .errors import GatewayError, bad_request, unsupported_parameter
from .failover import Failover
from .io import send_json, trace_headers
from .providers.base import Credential, Provider, Target

MAX_INPUTS = 2048


def validate_embeddings(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("You must provide a model parameter (a string).", param="model")
    value = body.get("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad_request("'input' must be a string or a non-empty array of strings.", param="input")
    if len(value) > MAX_INPUTS:
        raise bad_request(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    if not all(isinstance(v, str) for v in value) and not all(
        isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value
    ):
        raise bad_request("'input' must be strings, or arrays of token ids.", param="input")
    if any(isinstance(v, str) and not v for v in value):
        raise bad_request("'input' cannot contain an empty string.", param="input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be float or base64.", param="encoding_format")
    return {**body, "input": value}


def _base64_floats(values: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32s."""
    packed = array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


class EmbeddingsCall(ChatCall):
    endpoint = "embeddings"
    routes = False  # routing policies choose among chat models

    def parse(self, body: Any) -> dict[str, Any]:
        return validate_embeddings(body)

    def _record_request(self, body: dict[str, Any]) -> None:
        self.rec["requested_model"] = body["model"]
        self.rec["request_messages"] = orjson.dumps(body["input"]).decode()
        params = {k: v for k, v in body.items() if k not in ("input", "model", "user")}
        self.rec["request_params"] = orjson.dumps(params).decode()
        if isinstance(body.get("user"), str):
            self.rec["user"] = body["user"]

    async def _execute(self, failover: Failover, body: dict[str, Any]) -> None:
        # Providers get floats; base64 (what the OpenAI SDK asks for by default) is encoded here,
        # so every provider supports it.
        wants_base64 = body.get("encoding_format") == "base64"
        upstream = {k: v for k, v in body.items() if k != "encoding_format"}

        async def call(provider: Provider, target: Target, cred: Credential) -> dict[str, Any]:
            self.secrets = cred.secrets()
            embed = getattr(provider, "embed", None)
            if embed is None:
                raise unsupported_parameter(provider.name, "input", "This provider offers no embeddings endpoint.")
            if provider.name == "local" and not isinstance(upstream["input"][0], str):
                raise bad_request("The local embedding model takes text, not token ids.", param="input")
            data: dict[str, Any] = await embed(upstream, target.model, cred)
            return data

        try:
            data = await failover.run(call)
        finally:
            self._record_outcome(failover.outcome)
        items = data.get("data") or []
        if not all(isinstance(i, dict) and isinstance(i.get("embedding"), list) for i in items):
            raise GatewayError(502, "The provider returned malformed embeddings.", type="server_error")
        self.rec["response_message"] = orjson.dumps(
            {"count": len(items), "dimensions": len(items[0]["embedding"]) if items else 0}
        ).decode()
        _usage(self.rec, data.get("usage"))
        if wants_base64:
            for item in items:
                item["embedding"] = _base64_floats(item["embedding"])
        headers = trace_headers(self.trace_id, self.model, self.overhead_ms())
        await send_json(self.send, 200, orjson.dumps(data), headers)
