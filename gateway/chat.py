"""POST /v1/chat/completions: authenticate, validate, resolve, call the provider, answer (JSON or
SSE), and hand the trace to the writer. Runs outside Django's request cycle (see gateway/asgi.py);
a warm request touches no database."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import orjson

from traces.writer import get_writer

from . import cache
from .errors import GatewayError, bad_gateway, bad_request, too_large, unauthorized
from .providers import PROVIDERS
from .providers.base import redact
from .resolve import resolve
from .stream import StreamAccumulator
from .validation import validate_chat

log = logging.getLogger(__name__)
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def authenticate(scope: dict[str, Any]) -> cache.KeyInfo:
    auth = header(scope, b"authorization")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    info = await cache.key_info(token.strip())
    if info is None:
        raise unauthorized("Incorrect API key provided. Create one with `manage.py create_api_key`.")
    return info


async def read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def trace_headers(trace_id: str, model: str, overhead_ms: float) -> Headers:
    return [
        (b"x-opentracy-trace-id", trace_id.encode()),
        (b"x-request-id", trace_id.encode()),
        (b"x-opentracy-model", model.encode()),
        (b"x-opentracy-overhead-ms", f"{overhead_ms:.3f}".encode()),
    ]


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [JSON, *headers]})
    await send({"type": "http.response.body", "body": body})


def _usage(rec: dict[str, Any], usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    rec["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
    rec["completion_tokens"] = int(usage.get("completion_tokens") or 0)
    rec["cached_tokens"] = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


class ClientGone(Exception):
    """The caller closed the connection before the answer was complete."""


class ChatCall:
    """One request's state: timing, the trace record, the response."""

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send, max_body: int) -> None:
        self.scope, self.receive, self.send, self.max_body = scope, receive, send, max_body
        self.t0 = perf_counter()
        self.upstream_s = 0.0
        self.trace_id = str(uuid.uuid4())
        self.model = ""
        self.secrets: tuple[str, ...] = ()
        self.started = False  # response headers sent (a stream began)
        self.rec: dict[str, Any] = {"trace_id": self.trace_id, "timestamp": time.time()}

    def overhead_ms(self) -> float:
        return (perf_counter() - self.t0 - self.upstream_s) * 1000

    async def run(self) -> None:
        try:
            key = await authenticate(self.scope)
        except GatewayError as exc:
            # No project to attribute it to, so no trace (and an empty trace id); answered and logged.
            log.info("rejected /v1/chat/completions: %s", exc.message)
            await send_json(self.send, exc.status, exc.body(), trace_headers("", "", self.overhead_ms()))
            return
        self.rec.update(project_id=key.project_id, api_key_id=key.key_id)
        try:
            await self._serve(key)
        except GatewayError as exc:
            self._fail(exc)
            if self.started:
                await self.send({"type": "http.response.body", "body": b"data: " + exc.body() + b"\n\n"})
            else:
                headers = trace_headers(self.trace_id, self.model, self.overhead_ms())
                await send_json(self.send, exc.status, exc.body(), headers)
        except ClientGone:  # nobody is listening: stop paying the upstream for tokens
            self.rec.update(status=499, error_class="client_disconnected")
        except Exception:
            log.exception("unexpected error in chat completion %s", self.trace_id)
            failure = GatewayError(500, "The engine failed to handle this request.", type="server_error")
            self._fail(failure)
            if not self.started:
                await send_json(self.send, 500, failure.body(), trace_headers(self.trace_id, self.model, 0.0))
        finally:
            self.rec["latency_ms"] = (perf_counter() - self.t0) * 1000
            self.rec["overhead_ms"] = self.overhead_ms()
            get_writer().submit(self.rec)

    def _fail(self, exc: GatewayError) -> None:
        self.rec.update(status=exc.status, error_class=exc.error_class, error_message=redact(exc.message, self.secrets))

    async def _serve(self, key: cache.KeyInfo) -> None:
        raw = await read_body(self.scope, self.receive, self.max_body)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.rec["request_messages"] = raw.decode(errors="replace")  # keep what was sent
            raise bad_request("We could not parse the JSON body of your request. The body must be valid JSON.")
        if isinstance(body, dict):
            self._record_request(body)
        body = validate_chat(body)
        target, alias = await resolve(key.project_id, body["model"])
        self.model = target.name
        self.rec.update(resolved_model=target.name, provider=target.provider, alias=alias)
        provider = PROVIDERS[target.provider]
        stored = (await cache.credentials(key.project_id)).get(provider.name)
        cred = provider.credential(stored[0] if stored else None)
        if cred is None:
            raise bad_request(
                f"Provider `{provider.name}` is not configured: set {provider.env_hint} "
                "or store a credential for this project.",
                code="provider_not_configured",
            )
        self.secrets = cred.secrets()
        provider.check(body)
        if body.get("stream"):
            await self._stream(provider.stream(body, target.model, cred), body)
        else:
            await self._complete(provider.complete(body, target.model, cred))

    def _record_request(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        self.rec["requested_model"] = model if isinstance(model, str) else ""
        self.rec["request_messages"] = orjson.dumps(body.get("messages")).decode()
        params = {k: v for k, v in body.items() if k not in ("messages", "model", "metadata", "user")}
        self.rec["request_params"] = orjson.dumps(params).decode()
        self.rec["stream"] = body.get("stream") is True
        if isinstance(body.get("user"), str):
            self.rec["user"] = body["user"]
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            self.rec["metadata"] = {str(k): str(v) for k, v in metadata.items()}
        tags = header(self.scope, b"x-opentracy-tags")
        if tags:
            self.rec["tags"] = [t.strip() for t in tags.split(",") if t.strip()]

    async def _complete(self, pending: Awaitable[dict[str, Any]]) -> None:
        t = perf_counter()
        data = await pending
        self.upstream_s += perf_counter() - t
        choice = (data.get("choices") or [{}])[0]
        self.rec["response_message"] = orjson.dumps(choice.get("message")).decode()
        self.rec["finish_reason"] = choice.get("finish_reason") or ""
        _usage(self.rec, data.get("usage"))
        body = orjson.dumps(data)
        await send_json(self.send, 200, body, trace_headers(self.trace_id, self.model, self.overhead_ms()))

    async def _watch_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _stream(self, chunks: Any, body: dict[str, Any]) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        acc = StreamAccumulator()
        # The server drops writes to a closed connection silently; this tells us when it happens.
        watcher = asyncio.ensure_future(self._watch_disconnect())
        try:
            while True:
                if watcher.done():
                    raise ClientGone
                t = perf_counter()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self.upstream_s += perf_counter() - t
                acc.add(chunk)
                if not self.started:
                    self.rec["ttft_ms"] = (perf_counter() - self.t0) * 1000
                    headers = [*SSE_HEADERS, *trace_headers(self.trace_id, self.model, self.overhead_ms())]
                    await self.send({"type": "http.response.start", "status": 200, "headers": headers})
                    self.started = True
                if not include_usage:
                    if not chunk.get("choices") and chunk.get("usage"):
                        continue  # the usage chunk we asked for on the caller's behalf
                    chunk.pop("usage", None)
                await self.send(
                    {"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True}
                )
            if not self.started:  # an upstream that ended without a single chunk
                raise bad_gateway("The provider ended the stream without sending anything.", "upstream_stream_broken")
            await self.send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        finally:
            watcher.cancel()
            await chunks.aclose()
            self._record_stream(acc)

    def _record_stream(self, acc: StreamAccumulator) -> None:
        self.rec["response_message"] = orjson.dumps(acc.message()).decode()
        self.rec["finish_reason"] = acc.finish_reason
        _usage(self.rec, acc.usage)
