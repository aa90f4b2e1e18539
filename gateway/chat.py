"""POST /v1/chat/completions: authenticate, validate, resolve a plan, call the provider through
retries and fallbacks, answer (JSON or SSE), and hand the trace to the writer. Runs outside
Django's request cycle (see gateway/asgi.py); a warm request touches no database.

`ChatCall` speaks OpenAI's format on the wire; gateway/messages.py overrides the few format hooks
(`parse`, `render`, `stream_writer`, `error_body`) to speak Anthropic's on the same path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any

import orjson
from django.conf import settings

from traces.writer import get_writer

from . import cache, limits, metrics
from .errors import GatewayError, bad_gateway, bad_request
from .failover import Failover, Outcome
from .io import SSE_HEADERS, Headers, Receive, Send, authenticate, header, read_body, send_json, trace_headers
from .providers.base import Credential, Provider, Target, redact
from .resolve import Plan, check_retries, policy_ref, resolve, routed_plan
from .stream import StreamAccumulator
from .validation import validate_chat

log = logging.getLogger(__name__)
Chunks = AsyncIterator[dict[str, Any]]


def _usage(rec: dict[str, Any], usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    rec["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
    rec["completion_tokens"] = int(usage.get("completion_tokens") or 0)
    rec["cached_tokens"] = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or choice.get("finish_reason"):
            return True
    return False


async def open_stream(chunks: Chunks) -> tuple[list[dict[str, Any]], Chunks]:
    """Pull chunks until the first one with content, holding them back: a failure before that
    point can still be retried or fall back, since the caller has seen nothing yet."""
    held: list[dict[str, Any]] = []
    try:
        while True:
            chunk = await chunks.__anext__()
            held.append(chunk)
            if _has_content(chunk):
                break
    except StopAsyncIteration:
        if not held:
            raise bad_gateway("The provider ended the stream without sending anything.", "upstream_stream_broken")
    except BaseException:
        await chunks.aclose()  # type: ignore[attr-defined]
        raise
    return held, chunks


class OpenAIStreamWriter:
    """Chunks as OpenAI SSE frames, hiding the usage chunk the engine asked for on the caller's behalf."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if not self.include_usage:
            if not chunk.get("choices") and chunk.get("usage"):
                return b""
            chunk.pop("usage", None)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def close(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: GatewayError) -> bytes:
        return b"data: " + exc.body() + b"\n\n"


class ClientGone(Exception):
    """The caller closed the connection before the answer was complete."""


class ChatCall:
    """One request's state: timing, the trace record, the response."""

    endpoint = "chat"
    routes = True  # `auto` and router aliases pick the model per prompt (embeddings do not)

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send, max_body: int) -> None:
        self.scope, self.receive, self.send, self.max_body = scope, receive, send, max_body
        self.t0 = perf_counter()
        self.upstream_s = 0.0
        self.trace_id = str(uuid.uuid4())
        self.model = ""
        self.secrets: tuple[str, ...] = ()
        self.started = False  # response headers sent (a stream began)
        self.writer: Any = None
        self.route_headers: Headers = []  # x-opentracy-route-* when a policy picked the model
        self.rec: dict[str, Any] = {"trace_id": self.trace_id, "timestamp": time.time(), "endpoint": self.endpoint}

    # ------------------------------------------------------------ format hooks

    def parse(self, body: Any) -> dict[str, Any]:
        """The request as an OpenAI chat body (raises a 400 GatewayError)."""
        return validate_chat(body)

    def render(self, data: dict[str, Any], body: dict[str, Any]) -> bytes:
        return orjson.dumps(data)

    def stream_writer(self, body: dict[str, Any]) -> Any:
        return OpenAIStreamWriter(bool((body.get("stream_options") or {}).get("include_usage")))

    def error_body(self, exc: GatewayError) -> bytes:
        return exc.body()

    # ------------------------------------------------------------ the request

    def overhead_ms(self) -> float:
        return (perf_counter() - self.t0 - self.upstream_s) * 1000

    def headers(self) -> Headers:
        return [*trace_headers(self.trace_id, self.model, self.overhead_ms()), *self.route_headers]

    async def run(self) -> None:
        try:
            key = await authenticate(self.scope)
        except GatewayError as exc:
            # No project to attribute it to, so no trace (and an empty trace id); answered and logged.
            log.info("rejected %s: %s", self.scope["path"], exc.message)
            metrics.rejected(self.endpoint, exc)
            await send_json(self.send, exc.status, self.error_body(exc), trace_headers("", "", self.overhead_ms()))
            return
        self.rec.update(project_id=key.project_id, api_key_id=key.key_id, retention_days=key.retention_days)
        try:
            await self._serve(key)
        except GatewayError as exc:
            self._fail(exc)
            if self.started:
                await self.send({"type": "http.response.body", "body": self.writer.error(exc)})
            else:
                headers = self.headers()
                if exc.retry_after is not None:
                    headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
                await send_json(self.send, exc.status, self.error_body(exc), headers)
        except ClientGone:  # nobody is listening: stop paying the upstream for tokens
            self.rec.update(status=499, error_class="client_disconnected")
        except Exception:
            log.exception("unexpected error in %s %s", self.endpoint, self.trace_id)
            failure = GatewayError(500, "The engine failed to handle this request.", type="server_error")
            self._fail(failure)
            if not self.started:
                await send_json(self.send, 500, self.error_body(failure), trace_headers(self.trace_id, self.model, 0.0))
        finally:
            self.rec["latency_ms"] = (perf_counter() - self.t0) * 1000
            self.rec["overhead_ms"] = self.overhead_ms()
            metrics.observe(self.rec)
            limits.settle(key, self.rec)
            get_writer().submit(self.rec)

    def _fail(self, exc: GatewayError) -> None:
        self.rec.update(status=exc.status, error_class=exc.error_class, error_message=redact(exc.message, self.secrets))

    async def _serve(self, key: cache.KeyInfo) -> None:
        raw = await read_body(self.scope, self.receive, self.max_body)
        try:
            body = self.parse(orjson.loads(raw))
        except (orjson.JSONDecodeError, GatewayError) as exc:
            self.rec["request_messages"] = raw.decode(errors="replace")  # keep what was sent
            if isinstance(exc, GatewayError):
                raise
            raise bad_request(
                "We could not parse the JSON body of your request. The body must be valid JSON."
            ) from None
        self._record_request(body)
        retries = self._retries_override(body)
        plan = await self._plan(key.project_id, body, retries)
        self.model = plan.targets[0].name
        self.rec.update(resolved_model=self.model, provider=plan.targets[0].provider, alias=plan.alias)
        await limits.admit(key, body)
        failover = Failover(key.project_id, plan, await cache.credentials(key.project_id))
        await self._execute(failover, body)

    async def _plan(self, project_id: int, body: dict[str, Any], retries: int | None) -> Plan:
        """Resolve the model name; one that names a routing policy is routed for this prompt."""
        ref = await policy_ref(project_id, body["model"]) if self.routes else None
        if ref is None:
            return await resolve(project_id, body["model"], retries, settings.OPENTRACY_RETRIES)
        from routing import gateway as router  # numpy/scipy: imported by the first routed request

        try:
            decision = await router.decide_request(project_id, body, ref.policy)
        except router.NoRoute as exc:
            self.rec["route_policy"] = exc.policy
            self.route_headers = [(b"x-opentracy-route-policy", exc.policy.encode())]
            raise
        self.rec.update(router.trace_fields(decision))
        self.route_headers = router.headers(decision)
        return routed_plan(decision.order, ref, retries, settings.OPENTRACY_RETRIES)

    async def _execute(self, failover: Failover, body: dict[str, Any]) -> None:
        try:
            if body.get("stream"):
                held, chunks = await failover.run(self._open(body))
            else:
                data = await failover.run(self._complete(body))
        finally:
            self._record_outcome(failover.outcome)
        if body.get("stream"):
            await self._stream(held, chunks, body)
        else:
            await self._answer(data, body)

    def _retries_override(self, body: dict[str, Any]) -> int | None:
        """`extra_body={"opentracy": {"retries": n}}` or the `x-opentracy-retries` header."""
        engine = body.pop("opentracy", None)
        if engine is not None and not isinstance(engine, dict):
            raise bad_request("'opentracy' must be an object, e.g. {\"retries\": 1}.", param="opentracy")
        if engine and "retries" in engine:
            return check_retries(engine["retries"], "'opentracy.retries'")
        value = header(self.scope, b"x-opentracy-retries")
        if value:
            return check_retries(int(value) if value.isdigit() else value, "The x-opentracy-retries header")
        return None

    def _complete(self, body: dict[str, Any]) -> Callable[[Provider, Target, Credential], Awaitable[dict[str, Any]]]:
        async def call(provider: Provider, target: Target, cred: Credential) -> dict[str, Any]:
            self.secrets = cred.secrets()
            provider.check(body)
            return await provider.complete(body, target.model, cred)

        return call

    def _open(
        self, body: dict[str, Any]
    ) -> Callable[[Provider, Target, Credential], Awaitable[tuple[list[dict[str, Any]], Chunks]]]:
        async def call(provider: Provider, target: Target, cred: Credential) -> tuple[list[dict[str, Any]], Chunks]:
            self.secrets = cred.secrets()
            provider.check(body)
            return await open_stream(provider.stream(body, target.model, cred))

        return call

    def _record_request(self, body: dict[str, Any]) -> None:
        self.rec["requested_model"] = body["model"]
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

    def _record_outcome(self, out: Outcome) -> None:
        self.upstream_s += out.upstream_s
        self.rec.update(
            attempts=[a.row() for a in out.attempts],
            retries=out.retries,
            fallbacks=out.fallbacks,
            cooldowns_started=out.cooldowns_started,
        )
        if out.target is not None:
            self.model = out.target.name
            self.rec.update(resolved_model=out.target.name, provider=out.target.provider)

    async def _answer(self, data: dict[str, Any], body: dict[str, Any]) -> None:
        choice = (data.get("choices") or [{}])[0]
        self.rec["response_message"] = orjson.dumps(choice.get("message")).decode()
        self.rec["finish_reason"] = choice.get("finish_reason") or ""
        _usage(self.rec, data.get("usage"))
        payload = self.render(data, body)
        await send_json(self.send, 200, payload, self.headers())

    async def _watch_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _stream(self, held: list[dict[str, Any]], chunks: Chunks, body: dict[str, Any]) -> None:
        acc = StreamAccumulator()
        self.writer = self.stream_writer(body)
        # The server drops writes to a closed connection silently; this tells us when it happens.
        watcher = asyncio.ensure_future(self._watch_disconnect())
        try:
            self.rec["ttft_ms"] = (perf_counter() - self.t0) * 1000
            headers: Headers = [*SSE_HEADERS, *self.headers()]
            await self.send({"type": "http.response.start", "status": 200, "headers": headers})
            self.started = True
            for chunk in held:
                await self._send_chunk(acc, chunk)
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
                await self._send_chunk(acc, chunk)
            await self.send({"type": "http.response.body", "body": self.writer.close()})
        finally:
            watcher.cancel()
            await chunks.aclose()  # type: ignore[attr-defined]
            self._record_stream(acc)

    async def _send_chunk(self, acc: StreamAccumulator, chunk: dict[str, Any]) -> None:
        acc.add(chunk)
        frame = self.writer.feed(chunk)
        if frame:
            await self.send({"type": "http.response.body", "body": frame, "more_body": True})

    def _record_stream(self, acc: StreamAccumulator) -> None:
        self.rec["response_message"] = orjson.dumps(acc.message()).decode()
        self.rec["finish_reason"] = acc.finish_reason
        _usage(self.rec, acc.usage)
