"""A fake OpenAI Chat Completions API (`POST /v1/chat/completions`) for tests, speaking the real
wire format: JSON answers and `data:` SSE streams ending in `data: [DONE]`.

The requested model name picks the behaviour:
- default: "You said: <last user text>"; usage is deterministic: prompt_tokens = words in all
  message texts, completion_tokens = words in the answer. "cached" in the name reports 3 cached
  prompt tokens. `n` > 1 gives n choices.
- "tool": a tool call of the first tool in the request with arguments {"city": "Paris"}.
- "json": the answer is the JSON object {"answer": "<last user text>"} as a string.
- "error-400" / "error-429" / "error-500": that status with OpenAI's error body.
- "auth": 401 whose message echoes the Authorization header (to test redaction).
- "slow": sleeps 30 s before answering. "garbage": 200 with a body that is not JSON.
- "cut" (streaming): two content chunks, then the connection is dropped without [DONE].
- "stream-error" (streaming): an error event after the first content chunk.
- "long" (streaming): 200 words, 20 ms apart; `finished_streams` counts the ones sent to the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from .server import LoopbackServer

COMPLETION_ID = "chatcmpl-fake0123"


def _error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": None}}
    return web.json_response(body, status=status)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part.get("text", "") for part in content or [] if part.get("type") == "text"]


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(t.split()) for m in body["messages"] for t in _texts(m.get("content")))


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body["messages"]):
        if msg.get("role") == "user":
            return " ".join(_texts(msg.get("content")))
    return ""


def _answer(model: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message and its finish reason."""
    if "tool" in model and body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        call = {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    text = _last_user_text(body)
    content = json.dumps({"answer": text}) if "json" in model else f"You said: {text}"
    if "long" in model:
        content = " ".join(f"word{i}" for i in range(200))
    return {"role": "assistant", "content": content}, "stop"


def _usage(model: str, body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    completion_text = message["content"] or json.dumps([c["function"] for c in message.get("tool_calls", [])])
    prompt, completion = prompt_tokens(body), len(completion_text.split())
    cached = 3 if "cached" in model else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


class FakeOpenAI(LoopbackServer):
    name = "fake-openai"

    finished_streams = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        model = body.get("model", "")
        for status in (400, 429, 500):
            if f"error-{status}" in model:
                return _error(status, f"Fake upstream error {status}.", "server_error" if status == 500 else "x")
        if "auth" in model:
            return _error(401, f"Incorrect API key provided: {request.headers.get('Authorization', '')}.")
        if "slow" in model:
            await asyncio.sleep(30)
        if "garbage" in model:
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        message, finish = _answer(model, body)
        usage = _usage(model, body, message)
        if body.get("stream"):
            return await self._stream(request, body, message, finish, usage)
        n = body.get("n") or 1
        return web.json_response(
            {
                "id": COMPLETION_ID,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": i, "message": {**message, "refusal": None}, "finish_reason": finish, "logprobs": None}
                    for i in range(n)
                ],
                "usage": usage,
                "system_fingerprint": "fp_fake",
                "service_tier": "default",
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], message: dict[str, Any], finish: str, usage: dict[str, Any]
    ) -> web.StreamResponse:
        model = body["model"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": COMPLETION_ID,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }

        async def send(obj: dict[str, Any] | str) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            await resp.write(f"data: {data}\n\n".encode())

        await send(chunk({"role": "assistant", "content": "", "refusal": None}))
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
            await send(chunk({"tool_calls": [{**head, "function": {**head["function"], "arguments": ""}}]}))
            args = call["function"]["arguments"]
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                await send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
        else:
            words = message["content"].split(" ")
            for i, word in enumerate(words):
                await send(chunk({"content": word if i == 0 else " " + word}))
                if "cut" in model and i == 1:
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.close()  # drop the connection without [DONE]
                    return resp
                if "long" in model:
                    await asyncio.sleep(0.02)
                if "stream-error" in model:
                    await send({"error": {"message": "Fake upstream failed mid-stream.", "type": "server_error"}})
                    return resp
        await send(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**chunk({}), "choices": [], "usage": usage})
        await send("[DONE]")
        self.finished_streams += 1
        return resp
