"""AWS Bedrock's Converse API (`POST /model/{modelId}/converse` and `/converse-stream`).

The translation to and from OpenAI Chat Completions is in `converse.py`; this module adds the
credential (an access key id, a secret access key, a region, an optional session token), SigV4
signing and the HTTP calls. Signing and the binary event stream of ConverseStream
(`application/vnd.amazon.eventstream`) use botocore's maintained implementations rather than
hand-written crypto or framing.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from gateway.errors import GatewayError, bad_gateway, bad_request, gateway_timeout, unsupported_parameter

from .base import Credential
from .converse import NAME, StreamTranslator, from_converse, stream_exception, to_converse
from .http import session, unreachable, upstream_error

if TYPE_CHECKING:
    from botocore.eventstream import EventStreamMessage

DEFAULT_REGION = "us-east-1"
SIGNING_NAME = "bedrock"  # the SigV4 service name of bedrock-runtime
EVENT_STREAM = "application/vnd.amazon.eventstream"
# OpenAI parameters Converse has no equivalent for: refused (422) rather than silently dropped.
UNSUPPORTED = ("seed", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias")
_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.")


def default_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def _env_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


def region_of(cred: Credential) -> str:
    """The signing region: the credential's option, else the one in a Bedrock host name."""
    if cred.option("region"):
        return cred.option("region")
    found = _REGION_IN_HOST.search(cred.base_url)
    return found.group(1) if found else DEFAULT_REGION


# ---------------------------------------------------------------- the wire: signing, errors, frames


def sign(url: str, data: bytes, cred: Credential, region: str) -> dict[str, str]:
    """SigV4 headers for POSTing exactly `data` to `url` (botocore computes the signature)."""
    # botocore is imported on first use: it adds a few hundred ms to every process start otherwise.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    key_id = cred.option("access_key_id")
    if not key_id or not cred.api_key:
        raise bad_request(
            "Provider `bedrock` needs an access key id (the `access_key_id` option) and a secret access key.",
            code="provider_not_configured",
        )
    request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
    token = cred.option("session_token") or None
    SigV4Auth(Credentials(key_id, cred.api_key, token), SIGNING_NAME, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str], secrets: tuple[str, ...]) -> GatewayError:
    """A Bedrock error answer ({"message": ...} plus `x-amzn-ErrorType`) mapped like every provider's."""
    kind = (headers.get("x-amzn-ErrorType") or "").split(":", 1)[0]
    message = ""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("Message") or "")
        kind = kind or str(data.get("__type") or "").rpartition("#")[2]
    if not message:
        message = raw[:300].decode(errors="replace") or f"HTTP {status}"
    code: str | None = kind or None
    if status == 400 and "too long" in message.lower():
        code = "context_length_exceeded"  # lets failover move on to a longer-context model
    body = orjson.dumps({"error": {"message": message, "code": code}})
    return upstream_error(NAME, status, body, secrets, headers.get("Retry-After"))


def _payload(message: EventStreamMessage) -> dict[str, Any]:
    try:
        data = orjson.loads(message.payload) if message.payload else {}
    except orjson.JSONDecodeError:
        raise bad_gateway("Provider `bedrock` sent a stream event that is not JSON.") from None
    if not isinstance(data, dict):
        raise bad_gateway("Provider `bedrock` sent a stream event of an unexpected shape.")
    return data


def _request_id(headers: Mapping[str, str]) -> str:
    return headers.get("x-amzn-RequestId") or ""


# ---------------------------------------------------------------- the provider


class BedrockProvider:
    name: str = NAME
    model_prefixes: tuple[str, ...] = (
        "anthropic.",
        "amazon.",
        "meta.",
        "mistral.",
        "cohere.",
        "us.",
        "eu.",
        "apac.",
        "global.",
    )
    env_hint = "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION"
    known_models: tuple[str, ...] = (
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "amazon.nova-pro-v1:0",
        "amazon.nova-lite-v1:0",
        "meta.llama3-3-70b-instruct-v1:0",
    )

    def credential(self, stored: Credential | None) -> Credential | None:
        if stored is not None:
            if stored.base_url:
                return stored
            region = stored.option("region") or _env_region() or DEFAULT_REGION
            return replace(stored, base_url=default_base_url(region), options={**stored.options, "region": region})
        key_id = os.environ.get("AWS_ACCESS_KEY_ID") or ""
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or ""
        if not key_id or not secret:
            return None
        region = _env_region() or DEFAULT_REGION
        base = (os.environ.get("BEDROCK_BASE_URL") or default_base_url(region)).rstrip("/")
        options = {"access_key_id": key_id, "region": region}
        token = os.environ.get("AWS_SESSION_TOKEN") or ""
        if token:
            options["session_token"] = token
        return Credential(secret, base, options)

    def check(self, body: dict[str, Any]) -> None:
        for param in UNSUPPORTED:
            # `logprobs: false` or `logit_bias: {}` ask for nothing and pass; `seed: 0` does not.
            value = body.get(param)
            if value is not None and value is not False and value != {}:
                raise unsupported_parameter(self.name, param)
        n = body.get("n")
        if n is not None and n != 1:
            raise unsupported_parameter(self.name, "n", "Bedrock returns a single choice.")

    def _request(
        self, body: dict[str, Any], model: str, cred: Credential, action: str
    ) -> tuple[URL, bytes, dict[str, str]]:
        self.check(body)
        data = orjson.dumps(to_converse(body))
        url = f"{cred.base_url.rstrip('/')}/model/{quote(model, safe='')}/{action}"
        headers = sign(url, data, cred, region_of(cred))
        # encoded=True: send the path exactly as signed (yarl would turn %3A back into ':').
        return URL(url, encoded=True), data, headers

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        url, data, headers = self._request(body, model, cred, "converse")
        secrets = cred.secrets()
        try:
            async with session().post(url, data=data, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_from_response(resp.status, raw, resp.headers, secrets)
                response_id = _request_id(resp.headers)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise gateway_timeout(f"Provider `{self.name}` did not answer in time.") from None
        except aiohttp.ClientError as exc:
            raise unreachable(self.name, exc) from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_gateway(f"Provider `{self.name}` sent a response that is not JSON.") from None
        if not isinstance(answer, dict):
            raise bad_gateway(f"Provider `{self.name}` sent a response of an unexpected shape.")
        return from_converse(answer, model, response_id)

    async def _frames(
        self, url: URL, data: bytes, headers: dict[str, str], secrets: tuple[str, ...], translator: StreamTranslator
    ) -> AsyncGenerator[EventStreamMessage, None]:
        """POST and yield each event-stream message as its bytes complete. Raises GatewayError on an
        error status, a timeout, a broken connection or a malformed frame."""
        from botocore.eventstream import EventStreamBuffer, ParserError

        try:
            async with session().post(url, data=data, headers=headers) as resp:
                if resp.status >= 400:
                    raise error_from_response(resp.status, await resp.read(), resp.headers, secrets)
                if not resp.headers.get("Content-Type", "").startswith(EVENT_STREAM):
                    raise bad_gateway(f"Provider `{self.name}` answered a stream request without an event stream.")
                translator.id = f"chatcmpl-{_request_id(resp.headers) or uuid.uuid4().hex}"
                buffer = EventStreamBuffer()
                async for piece in resp.content.iter_any():
                    buffer.add_data(piece)
                    for message in buffer:
                        yield message
        except ParserError:
            raise bad_gateway(
                f"Provider `{self.name}` sent a malformed event stream.", code="upstream_stream_broken"
            ) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise gateway_timeout(f"Provider `{self.name}` stopped sending in time.") from None
        except aiohttp.ClientPayloadError:
            raise bad_gateway(f"Provider `{self.name}` cut the stream off.", code="upstream_stream_broken") from None
        except aiohttp.ClientError as exc:
            raise unreachable(self.name, exc) from None

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        url, data, headers = self._request(body, model, cred, "converse-stream")
        secrets = cred.secrets()
        translator = StreamTranslator(model)
        frames = self._frames(url, data, headers, secrets, translator)
        # Close the generator (and its HTTP response) even if our caller stops early.
        async with aclosing(frames):
            async for message in frames:
                kind = message.headers.get(":message-type")
                if kind == "exception":
                    error = _payload(message)
                    raise stream_exception(
                        str(message.headers.get(":exception-type") or "exception"),
                        str(error.get("message") or error.get("Message") or ""),
                        secrets,
                    )
                if kind == "error":
                    raise stream_exception(
                        str(message.headers.get(":error-code") or "error"),
                        str(message.headers.get(":error-message") or ""),
                        secrets,
                    )
                if translator.done:
                    continue
                for chunk in translator.feed(str(message.headers.get(":event-type") or ""), _payload(message)):
                    yield chunk
        if not translator.done:
            raise bad_gateway(f"Provider `{self.name}` ended the stream early.", code="upstream_stream_broken")
