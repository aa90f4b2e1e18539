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
- "error-502" / "error-503": those statuses. "ratelimited": 429 with `Retry-After: 1`.
- "flaky<N>-<status>" (e.g. "flaky2-503"): that status for the first N calls with the same model and
  last user text, then a normal answer; "flaky1-429ra" sends Retry-After: 1 with its 429.
- "context": 400 with code context_length_exceeded.
- "cut-early" (streaming): the role chunk, then the connection is dropped before any content.
- "stall" (streaming): two content chunks, then silence (the gateway's read timeout must fire).
- Azure: POST /openai/deployments/<deployment>/chat/completions?api-version=... with an `api-key`
  header answers like the default (the deployment name plays the model).
- "scripted...": the next text queued in `scripts[model]` (the last one repeats once the queue is
  down to it); a callable there is called with the request body and returns the text. Namer and
  judge tests script what the "LLM" answers, garbage included.
- POST /v1/embeddings: deterministic 8-dimensional vectors; "error-500" in the model fails.
- GET /v1/models: OpenAI's model list when the Bearer key is `api_key` (conftest's FAKE_OPENAI_KEY),
  else 401 with OpenAI's invalid_api_key body (the key masked, as OpenAI does).
  GET /openai/models?api-version=... (Azure): the same list for `api-key: <api_key>`, else Azure's 401.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from .server import LoopbackServer

COMPLETION_ID = "chatcmpl-fake0123"
API_KEY = "sk-test-fake-openai-key-0123456789"  # the key GET /v1/models accepts (conftest.FAKE_OPENAI_KEY)
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o4-mini", "text-embedding-3-small")


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
    api_key = API_KEY

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple[str, str], int] = {}
        self.scripts: dict[str, list[Any]] = {}

    def _scripted(self, model: str, body: dict[str, Any]) -> str:
        queue = self.scripts.get(model) or ["(nothing scripted)"]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return str(reply(body) if callable(reply) else reply)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/openai/models", self._azure_models)

    async def _models(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:]:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = auth[7:]
        if key != self.api_key:
            body = {
                "error": {
                    "message": f"Incorrect API key provided: {key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}. "
                    "You can find your API key at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            return web.json_response(body, status=401)
        data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    async def _azure_models(self, request: web.Request) -> web.Response:
        if request.headers.get("api-key") != self.api_key:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource."
            )
            return web.json_response({"error": {"code": "401", "message": message}}, status=401)
        if not request.query.get("api-version"):
            body = {"error": {"code": "404", "message": "Resource not found"}}
            return web.json_response(body, status=404)
        data = [
            {
                "id": m,
                "object": "model",
                "status": "succeeded",
                "created_at": 1715367049,
                "lifecycle_status": "generally-available",
            }
            for m in MODELS
        ]
        return web.json_response({"object": "list", "data": data})

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version") or not request.headers.get("api-key"):
            return _error(401, "Access denied due to missing api-key or api-version.")
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body, "path": request.path_qs})
        body["model"] = request.match_info["deployment"]
        message, finish = _answer(body["model"], body)
        usage = _usage(body["model"], body, message)
        if body.get("stream"):
            return await self._stream(request, body, message, finish, usage)
        return web.json_response(self._completion(body["model"], message, finish, usage, 1))

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if "error-500" in body.get("model", ""):
            return _error(500, "Fake upstream error 500.", "server_error")
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [((len(str(text)) + d) % 7) / 7 for d in range(8)]}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _flaky(self, model: str, body: dict[str, Any]) -> web.Response | None:
        """The failure a "flaky<N>-<status>" model owes this call, if any."""
        spec = model.split("flaky", 1)[1]
        count, _, status = spec.partition("-")
        key = (model, _last_user_text(body))
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] > int(count):
            return None
        response = _error(int(status[:3]), f"Fake transient error {status[:3]}.", "server_error")
        if status.endswith("ra"):
            response.headers["Retry-After"] = "1"
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        model = body.get("model", "")
        for status in (400, 429, 500, 502, 503):
            if f"error-{status}" in model:
                return _error(status, f"Fake upstream error {status}.", "server_error" if status >= 500 else "x")
        if "ratelimited" in model:
            response = _error(429, "Rate limit reached for requests.", "requests")
            response.headers["Retry-After"] = "1"
            return response
        if "flaky" in model:
            failure = self._flaky(model, body)
            if failure is not None:
                return failure
        if "context" in model:
            body_ = {
                "error": {
                    "message": "This model's maximum context length is 128000 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
            return web.json_response(body_, status=400)
        if "auth" in model:
            return _error(401, f"Incorrect API key provided: {request.headers.get('Authorization', '')}.")
        if "slow" in model:
            await asyncio.sleep(30)
        if "garbage" in model:
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        message, finish = _answer(model, body)
        if model.startswith("scripted"):
            message = {"role": "assistant", "content": self._scripted(model, body)}
        usage = _usage(model, body, message)
        if body.get("stream"):
            return await self._stream(request, body, message, finish, usage)
        return web.json_response(self._completion(model, message, finish, usage, body.get("n") or 1))

    @staticmethod
    def _completion(model: str, message: dict[str, Any], finish: str, usage: dict[str, Any], n: int) -> dict[str, Any]:
        return {
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
        if "cut-early" in model:
            await asyncio.sleep(0.02)
            assert request.transport is not None
            request.transport.close()
            return resp
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
                if "stall" in model and i == 1:
                    await asyncio.sleep(30)
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
