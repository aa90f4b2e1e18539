"""A fake Cohere Chat API v2 (`POST /v2/chat`) for tests, speaking the real wire format: Bearer
auth, Cohere's error body `{"id", "message"}`, answers with `message.content` as a list, upper-case
finish reasons and `usage.billed_units` / `usage.tokens`, and SSE streams of typed events
(message-start, content-start/delta/end, tool-plan-delta, tool-call-start/delta/end, message-end).

    fake = FakeCohere()
    fake.start()            # serves on 127.0.0.1:<free port> from a background thread
    ... Credential("co-test", fake.base_url) ...
    fake.stop()

Like the real API it refuses unknown top-level fields (so OpenAI-only fields such as `n`, `top_p` or
`stop` would be caught), a `tool` message whose `tool_call_id` no earlier assistant tool call has,
and roles other than system/user/assistant/tool. A request without a Bearer token gets a 401; each
request is recorded in `requests`.

The model name picks the behaviour:
- default: a text answer "You said: <last user text>"; usage is deterministic: billed input_tokens =
  words in every message's text, billed output_tokens = words in the answer; `tokens` (the raw
  counts, which include Cohere's own prompt template) are 10 more on input and 1 more on output.
  "cached" also reports cached_tokens=7.
- "tool": a tool_plan "I will call <name>." and a call of the first tool with arguments
  {"city": "Paris"} (or the first required property with a value of its type), finish_reason
  TOOL_CALL; streamed arguments arrive in 5-character pieces. "tools2" calls it twice (Paris, Rome).
  Once the last message is a tool result it answers "<tool_call_id> returned <content>" instead.
- "thinking": a thinking content block before the text. "max": finish_reason MAX_TOKENS.
- "error-400" / "error-429" / "error-500": that status with Cohere's error body.
- "auth": 401 whose message echoes the token received (to test redaction).
- "slow": sleeps 30 s before answering. "garbage": 200 with a body that is not JSON.
- "cut" (streaming): two text deltas, then the connection is dropped.
- "stream-error" (streaming): a message-end with finish_reason ERROR after the first delta.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .server import LoopbackServer

FIELDS = {
    "model",
    "messages",
    "stream",
    "tools",
    "tool_choice",
    "strict_tools",
    "documents",
    "citation_options",
    "response_format",
    "safety_mode",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "k",
    "p",
    "logprobs",
    "thinking",
}
MESSAGE_ID = "fake-cohere-0123"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"id": "err-fake", "message": message}, status=status)


def _words(text: str) -> int:
    return len(text.split())


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p.get("text", "") for p in content or [] if p.get("type") == "text"]


def input_tokens(body: dict[str, Any]) -> int:
    return sum(_words(t) for m in body.get("messages") or [] for t in _texts(m.get("content")))


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            texts = [t for t in _texts(msg.get("content")) if t]
            if texts:
                return texts[-1]
    return ""


def _tool_args(tool: dict[str, Any]) -> dict[str, Any]:
    schema = (tool.get("function") or {}).get("parameters") or {}
    props = schema.get("properties") or {}
    if "city" in props or not props:
        return {"city": "Paris"}
    name = (schema.get("required") or list(props))[0]
    kind = str((props.get(name) or {}).get("type"))
    value: Any = {"integer": 1, "number": 1.5, "boolean": True}.get(kind, "Paris")
    return {name: value}


def _check_messages(body: dict[str, Any]) -> str | None:
    """What the real API would refuse about `messages`, or None."""
    called: set[str] = set()
    for i, msg in enumerate(body.get("messages") or []):
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            return f"invalid request: messages[{i}].role must be one of system, user, assistant, tool"
        for call in msg.get("tool_calls") or []:
            if not isinstance(call["function"]["arguments"], str):
                return f"invalid request: messages[{i}].tool_calls arguments must be a string"
            called.add(call["id"])
        if role == "tool" and msg.get("tool_call_id") not in called:
            return f"invalid request: messages[{i}].tool_call_id does not match any tool call"
    return None


def _sse(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


class FakeCohere(LoopbackServer):
    name = "fake-cohere"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/chat", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "invalid request: body is not valid JSON")
        self.requests.append({"headers": dict(request.headers), "body": body, "path": request.path})
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:]:
            return _error(401, "no api key supplied")
        key = auth[7:]
        unknown = set(body) - FIELDS
        if unknown:
            return _error(400, f"invalid request: unknown field {sorted(unknown)[0]!r}")
        problem = _check_messages(body)
        if problem:
            return _error(400, problem)
        model = str(body.get("model", ""))
        for status in (400, 429, 500):
            if f"error-{status}" in model:
                return _error(status, f"Fake error {status} for {model}.")
        if "auth" in model:
            return _error(401, f"invalid api token {key}")
        if "slow" in model:
            await asyncio.sleep(30)
        if "garbage" in model:
            return web.Response(status=200, text="<html>definitely not json</html>", content_type="text/html")

        message, finish, output = self._answer(body, model)
        if isinstance(message, web.Response):
            return message
        billed = {"input_tokens": input_tokens(body), "output_tokens": output}
        tokens = {"input_tokens": billed["input_tokens"] + 10, "output_tokens": output + 1}
        usage: dict[str, Any] = {"billed_units": billed, "tokens": tokens}
        if "cached" in model:
            usage["cached_tokens"] = 7
        if body.get("stream"):
            return await self._stream(request, model, message, finish, usage)
        return web.json_response({"id": MESSAGE_ID, "finish_reason": finish, "message": message, "usage": usage})

    def _answer(self, body: dict[str, Any], model: str) -> tuple[Any, str, int]:
        """The assistant message, the finish reason, and the output token count."""
        messages = body.get("messages") or [{}]
        last = messages[-1]
        if "tool" in model and last.get("role") != "tool":
            tools = body.get("tools") or []
            if not tools:
                return _error(400, "invalid request: the fake tool model needs tools"), "", 0
            name = tools[0]["function"]["name"]
            cities = ["Paris", "Rome"] if "tools2" in model else [None]
            args = [{**_tool_args(tools[0]), **({"city": c} if c else {})} for c in cities]
            calls = [
                {"id": f"{name}_fake{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(a)}}
                for i, a in enumerate(args)
            ]
            plan = f"I will call {name}."
            output = _words(plan) + sum(_words(json.dumps(a)) for a in args)
            return {"role": "assistant", "tool_plan": plan, "tool_calls": calls}, "TOOL_CALL", output
        if last.get("role") == "tool":
            results = [m for m in messages if m.get("role") == "tool"]
            text = " ".join(f"{m['tool_call_id']} returned {' '.join(_texts(m.get('content')))}" for m in results)
        else:
            text = f"You said: {_last_user_text(body)}"
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if "thinking" in model:
            content.insert(0, {"type": "thinking", "thinking": "Let me think."})
        return {"role": "assistant", "content": content}, "MAX_TOKENS" if "max" in model else "COMPLETE", _words(text)

    async def _stream(
        self, request: web.Request, model: str, message: dict[str, Any], finish: str, usage: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        events: list[dict[str, Any]] = []
        empty = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
        events.append({"id": MESSAGE_ID, "type": "message-start", "delta": {"message": empty}})
        if message.get("tool_plan"):
            for i, word in enumerate(message["tool_plan"].split(" ")):
                plan = word if i == 0 else " " + word
                events.append({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": plan}}})
        for index, call in enumerate(message.get("tool_calls") or []):
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append({"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": head}}})
            raw = call["function"]["arguments"]
            for i in range(0, len(raw), 5):
                piece = {"tool_calls": {"function": {"arguments": raw[i : i + 5]}}}
                events.append({"type": "tool-call-delta", "index": index, "delta": {"message": piece}})
            events.append({"type": "tool-call-end", "index": index})
        for index, block in enumerate(message.get("content") or []):
            kind = block["type"]
            start = {"content": {"type": kind, kind: ""}}
            events.append({"type": "content-start", "index": index, "delta": {"message": start}})
            words = block[kind].split(" ")
            for i, word in enumerate(words):
                piece = {"content": {kind: word if i == 0 else " " + word}}
                events.append({"type": "content-delta", "index": index, "delta": {"message": piece}})
            events.append({"type": "content-end", "index": index})
        events.append({"id": MESSAGE_ID, "type": "message-end", "delta": {"finish_reason": finish, "usage": usage}})
        sent = 0
        for event in events:
            await resp.write(_sse(event))
            sent += event["type"] == "content-delta"
            if "stream-error" in model and sent == 1:
                error = {"finish_reason": "ERROR", "error": "internal server error, this has been reported"}
                await resp.write(_sse({"id": MESSAGE_ID, "type": "message-end", "delta": error}))
                break
            if "cut" in model and sent == 2:
                await asyncio.sleep(0.05)  # let the two deltas reach the client, then drop the connection
                assert request.transport is not None
                request.transport.abort()
                return resp
        await resp.write_eof()
        return resp
