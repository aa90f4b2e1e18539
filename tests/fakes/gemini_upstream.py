"""A fake Gemini API (`POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`) for tests, speaking the real wire format: camelCase JSON, Google's
error body `{"error": {"code", "message", "status"}}`, and SSE streams of partial
GenerateContentResponse objects (`data:` lines only, no closing event: the last chunk carries the
finishReason and the final usageMetadata).

    fake = FakeGemini()
    fake.start()            # serves on 127.0.0.1:<free port> from a background thread
    ... Credential("AIza-test", fake.base_url) ...
    fake.stop()

Like the real API it refuses unknown fields (top level and in generationConfig), contents without
parts, and a function-call turn that is not answered by as many functionResponse parts, with the
same names, in the next turn. A request without `x-goog-api-key` gets 403 PERMISSION_DENIED; each
request is recorded in `requests` with its path and query (to check the key never goes in the URL).

The model name picks the behaviour:
- default: a text answer "You said: <last user text>" per candidate (`candidateCount`); usage is
  deterministic: promptTokenCount = words in the system instruction, the text parts and the JSON of
  functionResponse parts; candidatesTokenCount = words in the answers. "cached" also reports
  cachedContentTokenCount=7 (part of promptTokenCount, as Gemini counts it); "thinking" adds a
  thought part and thoughtsTokenCount=4.
- "tool": a functionCall of the first declared function, args {"city": "Paris"} (or the first
  required property with a value of its type), with a thoughtSignature. Once the last turn holds
  functionResponse parts it answers "<name> returned <response JSON>" instead. "tools2" calls the
  first function twice (Paris, then Rome), in separate stream events.
- "blocked": no candidates, promptFeedback.blockReason SAFETY. "max": finishReason MAX_TOKENS.
- "error-400" / "error-429" / "error-500": that status with Google's error body.
- "auth": 401 UNAUTHENTICATED whose message echoes the key received (to test redaction).
  "badkey": what Gemini really answers for a wrong key, 400 INVALID_ARGUMENT API_KEY_INVALID.
- "slow": sleeps 30 s before answering. "garbage": 200 with a body that is not JSON.
- "cut" (streaming): two text chunks, then the connection is dropped.
- "stream-error" (streaming): an `{"error": ...}` event after the first chunk.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .server import LoopbackServer

STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}
FIELDS = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings", "cachedContent"}
CONFIG_FIELDS = {
    "temperature",
    "topP",
    "topK",
    "seed",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "thinkingConfig",
}
RESPONSE_ID = "fakeResp0123"
SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1mYWtl"


def _error(status: int, message: str, reason: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": STATUSES.get(status, "INTERNAL")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return web.json_response({"error": error}, status=status)


def _words(text: str) -> int:
    return len(text.split())


def input_tokens(body: dict[str, Any]) -> int:
    parts = list((body.get("systemInstruction") or {}).get("parts") or [])
    for content in body.get("contents") or []:
        parts.extend(content.get("parts") or [])
    count = 0
    for part in parts:
        if "text" in part:
            count += _words(part["text"])
        elif "functionResponse" in part:
            count += _words(json.dumps(part["functionResponse"].get("response")))
    return count


def _last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in content.get("parts") or [] if p.get("text")]
            if texts:
                return texts[-1]
    return ""


def _tool_args(decl: dict[str, Any]) -> dict[str, Any]:
    schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
    props = schema.get("properties") or {}
    if "city" in props or not props:
        return {"city": "Paris"}
    name = (schema.get("required") or list(props))[0]
    kind = str((props.get(name) or {}).get("type")).lower()
    value: Any = {"integer": 1, "number": 1.5, "boolean": True}.get(kind, "Paris")
    return {name: value}


def _check_turns(body: dict[str, Any]) -> str | None:
    """What the real API would refuse about `contents`, or None."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        if not content.get("parts"):
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
        if not calls:
            continue
        after = contents[i + 1] if i + 1 < len(contents) else None
        if after is None:
            continue
        answers = [p["functionResponse"]["name"] for p in after.get("parts") or [] if "functionResponse" in p]
        if sorted(answers) != sorted(calls):
            return (
                "Please ensure that the number of function response parts is equal to the number of "
                "function call parts of the function call turn."
            )
    return None


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\r\n\r\n".encode()


class FakeGemini(LoopbackServer):
    name = "fake-gemini"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._models)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Invalid JSON payload received.")
        self.requests.append(
            {"headers": dict(request.headers), "body": body, "path": request.path, "query": dict(request.query)}
        )
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return _error(
                403, "Method doesn't allow unregistered callers (callers without established identity).", "FORBIDDEN"
            )
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"Method {method} not found.")
        stream = method == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            return _error(400, "The fake only streams with alt=sse.")
        unknown = set(body) - FIELDS or set(body.get("generationConfig") or {}) - CONFIG_FIELDS
        if unknown:
            return _error(
                400, f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.'
            )
        problem = _check_turns(body)
        if problem:
            return _error(400, problem)
        for status in (400, 429, 500):
            if f"error-{status}" in model:
                return _error(status, f"Fake error {status} for {model}.")
        if "badkey" in model:
            return _error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        if "auth" in model:
            return _error(401, f"Request had invalid authentication credentials: {key}")
        if "slow" in model:
            await asyncio.sleep(30)
        if "garbage" in model:
            return web.Response(status=200, text="<html>definitely not json</html>", content_type="text/html")

        usage: dict[str, Any] = {"promptTokenCount": input_tokens(body)}
        if "cached" in model:
            usage["cachedContentTokenCount"] = 7
            usage["promptTokenCount"] += 7
        if "blocked" in model:
            resp = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage, "modelVersion": model}
            return await self._stream(request, [resp]) if stream else web.json_response(resp)
        candidates, output = self._candidates(body, model)
        if isinstance(candidates, web.Response):
            return candidates
        usage["candidatesTokenCount"] = output
        if "thinking" in model:
            usage["thoughtsTokenCount"] = 4
        usage["totalTokenCount"] = usage["promptTokenCount"] + output + usage.get("thoughtsTokenCount", 0)
        if stream:
            return await self._stream(request, self._chunks(candidates, usage, model), "cut" in model)
        resp = {"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": RESPONSE_ID}
        return web.json_response(resp)

    def _candidates(self, body: dict[str, Any], model: str) -> tuple[Any, int]:
        """The complete candidates of the answer, and the output token count."""
        last = (body.get("contents") or [{}])[-1]
        answered = [p["functionResponse"] for p in last.get("parts") or [] if "functionResponse" in p]
        parts: list[dict[str, Any]]
        if "tool" in model and not answered:
            decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
            if not decls:
                return _error(400, "The fake tool model needs functionDeclarations."), 0
            cities = ["Paris", "Rome"] if "tools2" in model else ["Paris"]
            args = [{**_tool_args(decls[0]), **({"city": c} if "tools2" in model else {})} for c in cities]
            parts = [{"functionCall": {"name": decls[0]["name"], "args": a}} for a in args]
            parts[0]["thoughtSignature"] = SIGNATURE
            output = sum(_words(json.dumps(a)) for a in args)
        else:
            if answered:
                text = " ".join(f"{r['name']} returned {json.dumps(r['response'])}" for r in answered)
            else:
                text = f"You said: {_last_user_text(body)}"
            parts = [{"text": text}]
            if "thinking" in model:
                parts.insert(0, {"text": "Let me think.", "thought": True})
            output = _words(text)
        finish = "MAX_TOKENS" if "max" in model else "STOP"
        n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        candidates = [
            {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": i} for i in range(n)
        ]
        return candidates, output * n

    def _chunks(self, candidates: list[dict[str, Any]], usage: dict[str, Any], model: str) -> list[dict[str, Any]]:
        """The answer as stream events: text word by word, each function call in its own event."""
        pieces: list[list[dict[str, Any]]] = []
        for part in candidates[0]["content"]["parts"]:
            if "text" in part and not part.get("thought"):
                words = part["text"].split(" ")
                pieces.extend([{"text": w if i == 0 else " " + w}] for i, w in enumerate(words))
            else:
                pieces.append([part])
        events = []
        for i, parts in enumerate(pieces):
            last = i == len(pieces) - 1
            cands = []
            for cand in candidates:
                c: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": cand["index"]}
                if last:
                    c["finishReason"] = cand["finishReason"]
                cands.append(c)
            partial = usage if last else {"promptTokenCount": usage["promptTokenCount"]}
            events.append(
                {"candidates": cands, "usageMetadata": partial, "modelVersion": model, "responseId": RESPONSE_ID}
            )
        if "stream-error" in model:  # Google ends a failed stream with an error object
            events = [
                events[0],
                {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
            ]
        return events

    async def _stream(
        self, request: web.Request, events: list[dict[str, Any]], cut: bool = False
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for n, event in enumerate(events):
            await resp.write(_sse(event))
            if cut and n == 1:
                await asyncio.sleep(0.05)  # let the two chunks reach the client, then drop the connection
                assert request.transport is not None
                request.transport.abort()
                return resp
        await resp.write_eof()
        return resp
