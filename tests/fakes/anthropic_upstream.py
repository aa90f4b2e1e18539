"""A fake Anthropic Messages API (`POST /v1/messages`) for tests, speaking the real wire format:
JSON answers, and SSE streams with `event:` and `data:` lines like Anthropic's.

    fake = FakeAnthropic()
    fake.start()            # serves on 127.0.0.1:<free port> from a background thread
    ... Credential("sk-ant-test", fake.base_url) ...
    fake.stop()

The requested model name picks the behaviour:
- default: a text answer "You said: <last user text>"; usage is deterministic: input_tokens = words in
  the system prompt and in every text / tool_result block of the messages, output_tokens = words in
  the answer. A model containing "cached" also reports cache_read_input_tokens=7 and
  cache_creation_input_tokens=3.
- "tool": a tool_use block for the first tool in the request, stop_reason "tool_use"; the input is
  {"city": "Paris"}, or the first required property of the tool's schema with a value of its type.
  output_tokens = words in the JSON of the input.
- "error-400" / "error-429" / "error-500": that status with Anthropic's error body.
- "auth": 401 whose message echoes the x-api-key received (to test redaction).
- "slow": sleeps 30 s before answering.
- "garbage": 200 with a body that is not JSON.
- "cut" (streaming): two text deltas, then the connection is closed without message_stop.
- "stream-error" (streaming): an `event: error` after the first text delta.
A request without `x-api-key` or `anthropic-version` gets a 401.

GET /v1/models: Anthropic's model list (`data`, `has_more`, `first_id`, `last_id`) when `x-api-key`
is `api_key` (conftest's FAKE_ANTHROPIC_KEY), else 401 with Anthropic's authentication_error body;
400 without `anthropic-version`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .server import LoopbackServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 500: "api_error"}
MESSAGE_ID = "msg_fake0123"
API_KEY = "sk-ant-test-fake-anthropic-key-0123456789"  # the key GET /v1/models accepts (conftest.FAKE_ANTHROPIC_KEY)
MODELS = (
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
)


def _error(status: int, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
    return web.json_response(body, status=status)


def _words(text: str) -> int:
    return len(text.split())


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for block in content or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            texts.extend(_block_texts(block.get("content")))
    return texts


def input_tokens(body: dict[str, Any]) -> int:
    system = body.get("system") or ""
    count = sum(_words(t) for t in _block_texts(system))
    for msg in body.get("messages", []):
        count += sum(_words(t) for t in _block_texts(msg.get("content")))
    return count


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages", [])):
        if msg.get("role") == "user":
            texts = [t for t in _block_texts(msg.get("content")) if t]
            if texts:
                return texts[-1]
    return ""


def _tool_input(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema") or {}
    props = schema.get("properties") or {}
    if "city" in props or not props:
        return {"city": "Paris"}
    name = (schema.get("required") or list(props))[0]
    kind = str((props.get(name) or {}).get("type"))
    value: Any = {"integer": 1, "number": 1.5, "boolean": True}.get(kind, "Paris")
    return {name: value}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(LoopbackServer):
    name = "fake-anthropic"
    api_key = API_KEY

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)

    async def _models(self, request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        data = [{"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in MODELS]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    # ------------------------------------------------------------ the endpoint

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Request body is not valid JSON.")
        self.requests.append({"headers": dict(request.headers), "body": body})
        key = request.headers.get("x-api-key")
        if not key:
            return _error(401, "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return _error(
                401, "anthropic-version header is required"
            )  # the real API says 400; tests only need a refusal
        model = str(body.get("model", ""))
        for status in (400, 429, 500):
            if f"error-{status}" in model:
                return _error(status, f"Fake error {status} for {model}.")
        if "auth" in model:
            return _error(401, f"invalid x-api-key: {key}")
        if "slow" in model:
            await asyncio.sleep(30)
        if "garbage" in model:
            return web.Response(status=200, text="<html>definitely not json</html>", content_type="text/html")

        usage: dict[str, Any] = {"input_tokens": input_tokens(body), "output_tokens": 0}
        if "cached" in model:
            usage.update(cache_read_input_tokens=7, cache_creation_input_tokens=3)
        if "tool" in model:
            tools = body.get("tools") or []
            if not tools:
                return _error(400, "The fake tool model needs `tools`.")
            tool_input = _tool_input(tools[0])
            usage["output_tokens"] = _words(json.dumps(tool_input))
            block = {"type": "tool_use", "id": "toolu_fake01", "name": tools[0]["name"], "input": tool_input}
            stop_reason = "tool_use"
        else:
            text = f"You said: {_last_user_text(body)}"
            usage["output_tokens"] = _words(text)
            block = {"type": "text", "text": text}
            stop_reason = "end_turn"
        if body.get("stream"):
            return await self._stream(request, model, block, stop_reason, usage)
        message = {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return web.json_response(message)

    async def _stream(
        self, request: web.Request, model: str, block: dict[str, Any], stop_reason: str, usage: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        start_usage = {**usage, "output_tokens": 1}
        message: dict[str, Any] = {"id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model}
        message.update(content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
        await resp.write(_sse("message_start", {"type": "message_start", "message": message}))
        start: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
        else:
            start = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": raw[i : i + 5]} for i in range(0, len(raw), 5)]
        await resp.write(
            _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start})
        )
        await resp.write(_sse("ping", {"type": "ping"}))
        for n, delta in enumerate(deltas):
            await resp.write(_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
            if "stream-error" in model:
                error = {"type": "overloaded_error", "message": "Overloaded"}
                await resp.write(_sse("error", {"type": "error", "error": error}))
                return resp
            if "cut" in model and n == 1:
                await asyncio.sleep(0.05)  # let the two deltas reach the client, then drop the connection
                assert request.transport is not None
                request.transport.abort()
                return resp
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        final = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
        final["usage"] = {"output_tokens": usage["output_tokens"]}
        await resp.write(_sse("message_delta", final))
        await resp.write(_sse("message_stop", {"type": "message_stop"}))
        await resp.write_eof()
        return resp
