"""Cohere's Chat API v2 (`POST /v2/chat`), translated to and from OpenAI Chat Completions.

Pure translation lives in `to_cohere`, `from_cohere` and `StreamTranslator` so it can be tested
without a network; `CohereProvider` only adds credentials and the HTTP calls.

Cohere's messages are close to OpenAI's (same roles, same tool and image shapes); the differences
are in the parameters (`p`, `stop_sequences`, `tool_choice` REQUIRED/NONE), the answer (content as a
list, upper-case finish reasons, `usage.billed_units`) and the stream (typed events). A model's
`tool_plan` (the text it writes before calling tools) is the assistant's content on the OpenAI side,
and goes back as `tool_plan` when that message returns in a later request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

import orjson

from gateway.errors import bad_gateway, bad_request, unsupported_parameter

from .base import Credential, env_credential, redact
from .http import parse_event, post_json, post_sse

NAME = "cohere"
DEFAULT_BASE_URL = "https://api.cohere.com"
# OpenAI parameters with no Cohere equivalent: refused (422) rather than silently dropped.
UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "functions",
    "function_call",
    "audio",
    "prediction",
    "web_search_options",
    "reasoning_effort",
)
FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "ERROR_LIMIT": "length",  # the context limit was reached
    "TOOL_CALL": "tool_calls",
    "CONTENT_BLOCKED": "content_filter",
    "ERROR_TOXIC": "content_filter",
}


# ---------------------------------------------------------------- OpenAI → Cohere


def _text_of(content: Any, role: str) -> str:
    """Plain text of a message: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text") or p.get("refusal") or ""
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "refusal")
        )
    raise bad_request(f"Invalid content in a `{role}` message.", param="messages")


def _user_content(content: Any) -> Any:
    """A user message's content: a string, or text and image_url parts (Cohere's shapes are OpenAI's)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("Invalid content in a `user` message.", param="messages")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                raise bad_request("Image URLs must be http(s) or data: URLs.", param="messages")
            if url.startswith("data:") and ";base64," not in url:
                raise bad_request("Image data URLs must be base64-encoded.", param="messages")
            spec: dict[str, Any] = {"url": url}
            if isinstance(image, dict) and image.get("detail") in ("auto", "low", "high"):
                spec["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": spec})
        else:
            raise unsupported_parameter(NAME, "messages", f"Content part type `{kind}` cannot be translated.")
    return parts


def _tool_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for call in tool_calls:
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        arguments = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
        try:
            valid = isinstance(orjson.loads(arguments), dict)
        except orjson.JSONDecodeError:
            valid = False
        if not valid:
            raise bad_request(f"The arguments of tool call `{call.get('id')}` must be a JSON object.", param="messages")
        function = {"name": fn.get("name"), "arguments": arguments}
        out.append({"id": call.get("id"), "type": "function", "function": function})
    return out


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, role)
            if text:
                out.append({"role": "system", "content": text})
        elif role == "user":
            out.append({"role": "user", "content": _user_content(content)})
        elif role == "assistant":
            text = _text_of(content, role)
            turn: dict[str, Any] = {"role": "assistant"}
            if msg.get("tool_calls"):
                turn["tool_calls"] = _tool_calls(msg["tool_calls"])
                if text:
                    turn["tool_plan"] = text
            elif text:
                turn["content"] = text
            else:
                continue  # an empty assistant turn says nothing
            out.append(turn)
        elif role == "tool":
            if not msg.get("tool_call_id"):
                raise bad_request("A `tool` message needs a `tool_call_id`.", param="messages")
            out.append({"role": "tool", "tool_call_id": msg["tool_call_id"], "content": _text_of(content, "tool")})
        else:
            raise bad_request(f"Unsupported message role `{role}`.", param="messages")
    return out


def _tools(tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """Cohere's tools are OpenAI's; `strict` on any function becomes Cohere's request-wide `strict_tools`."""
    out = []
    strict = False
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise unsupported_parameter(NAME, "tools", f"Tool type `{tool.get('type')}` cannot be translated.")
        fn = tool.get("function") or {}
        spec: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
        strict = strict or bool(fn.get("strict"))
        out.append({"type": "function", "function": spec})
    return out, strict


def _apply_tool_choice(out: dict[str, Any], choice: Any) -> None:
    """Cohere has REQUIRED and NONE (no setting is auto); a named function is REQUIRED with only
    that function offered."""
    if choice is None or choice == "auto":
        return
    if choice == "required":
        out["tool_choice"] = "REQUIRED"
    elif choice == "none":
        out["tool_choice"] = "NONE"
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        name = choice["function"]["name"]
        out["tools"] = [t for t in out["tools"] if t["function"]["name"] == name]
        if not out["tools"]:
            raise bad_request(f"`tool_choice` names `{name}`, which is not among the `tools`.", param="tool_choice")
        out["tool_choice"] = "REQUIRED"
    else:
        raise bad_request("Invalid `tool_choice`.", param="tool_choice")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "json_schema": schema} if schema else {"type": "json_object"}
    raise unsupported_parameter(NAME, "response_format", f"Type `{kind}` cannot be translated.")


def to_cohere(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request body as a Cohere v2 chat body. `metadata`, `user` and `stream_options`
    have no counterpart and are not sent; Cohere always reports usage."""
    out: dict[str, Any] = {"model": model, "messages": _messages(body.get("messages") or [])}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("seed", "seed"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ):
        if body.get(ours) is not None:
            out[theirs] = body[ours]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        out["max_tokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = _response_format(body.get("response_format"))
    if fmt:
        out["response_format"] = fmt
    if body.get("tools"):
        out["tools"], strict = _tools(body["tools"])
        if strict:
            out["strict_tools"] = True
        _apply_tool_choice(out, body.get("tool_choice"))
    if body.get("stream"):
        out["stream"] = True
    return out


# ---------------------------------------------------------------- Cohere → OpenAI


def _count(usage: dict[str, Any], field: str) -> int:
    """Billed tokens (what the price applies to), else the raw count."""
    billed = (usage.get("billed_units") or {}).get(field)
    return int(billed if billed is not None else (usage.get("tokens") or {}).get(field) or 0)


def usage_of(usage: dict[str, Any]) -> dict[str, Any]:
    prompt = _count(usage, "input_tokens")
    completion = _count(usage, "output_tokens")
    cached = usage.get("cached_tokens") or (usage.get("tokens") or {}).get("cached_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(cached)},
    }


def finish_reason(reason: str | None) -> str:
    """OpenAI's finish reason for Cohere's (ERROR is an upstream failure: callers check it first)."""
    return FINISH_REASONS.get(str(reason or "COMPLETE").upper(), "stop")


def _failed(reason: Any) -> bool:
    return str(reason).upper() == "ERROR"


def _arguments(raw: Any) -> str:
    return raw if isinstance(raw, str) else orjson.dumps(raw or {}).decode()


def from_cohere(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A Cohere v2 chat response as an OpenAI `chat.completion` object."""
    msg = resp.get("message")
    if not isinstance(msg, dict):
        raise bad_gateway("Provider `cohere` returned a response without a message.")
    texts = [c.get("text") or "" for c in msg.get("content") or [] if c.get("type") == "text"]
    tool_calls = [
        {
            "id": call.get("id"),
            "type": "function",
            "function": {
                "name": (call.get("function") or {}).get("name"),
                "arguments": _arguments((call.get("function") or {}).get("arguments")),
            },
        }
        for call in msg.get("tool_calls") or []
    ]
    text = "".join(texts) or (msg.get("tool_plan") if tool_calls else None) or None
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    reason = resp.get("finish_reason")
    if _failed(reason):
        raise bad_gateway("Provider `cohere` stopped with an error.")
    return {
        "id": f"chatcmpl-{resp.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(reason), "logprobs": None}],
        "usage": usage_of(resp.get("usage") or {}),
    }


class StreamTranslator:
    """Turns Cohere stream events into OpenAI `chat.completion.chunk` dicts. `feed` returns the
    chunks for one event; after `message-end`, `done` is true and the last chunk carried usage."""

    def __init__(self, model: str, secrets: tuple[str, ...] = ()) -> None:
        self.id = "chatcmpl-"
        self.model = model
        self.secrets = secrets
        self.created = int(time.time())
        self.done = False
        self._tools: dict[int, int] = {}  # Cohere tool-call index → OpenAI tool_calls index
        self._tool_has_args: dict[int, bool] = {}
        self._thinking: set[int] = set()  # content blocks that are reasoning, not answer

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def _tool_delta(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": self._tools[index], **call}]})

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type") or event
        message = (data.get("delta") or {}).get("message") or {}
        index = int(data.get("index") or 0)
        if kind == "message-start":
            self.id = f"chatcmpl-{data.get('id', '')}"
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("content-start", "content-delta"):
            content = message.get("content") or {}
            if content.get("type") == "thinking":
                self._thinking.add(index)
            if index in self._thinking or not content.get("text"):
                return []
            return [self._chunk({"content": content["text"]})]
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return [self._chunk({"content": plan})] if plan else []
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            fn = call.get("function") or {}
            self._tools[index] = len(self._tools)
            head = {"id": call.get("id"), "type": "function", "function": {"name": fn.get("name"), "arguments": ""}}
            chunks = [self._tool_delta(index, head)]
            self._tool_has_args[index] = bool(fn.get("arguments"))
            if fn.get("arguments"):
                chunks.append(self._tool_delta(index, {"function": {"arguments": fn["arguments"]}}))
            return chunks
        if kind == "tool-call-delta":
            piece = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            if not piece or index not in self._tools:
                return []
            self._tool_has_args[index] = True
            return [self._tool_delta(index, {"function": {"arguments": piece}})]
        if kind == "tool-call-end":
            if index in self._tools and not self._tool_has_args[index]:
                # A tool called without arguments: OpenAI clients expect valid JSON, not "".
                return [self._tool_delta(index, {"function": {"arguments": "{}"}})]
            return []
        if kind == "message-end":
            delta = data.get("delta") or {}
            if _failed(delta.get("finish_reason")):
                detail = redact(str(delta.get("error") or "no detail"), self.secrets)
                raise bad_gateway(f"Provider `cohere` failed mid-stream: {detail}", code="upstream_stream_broken")
            finish = finish_reason(delta.get("finish_reason"))
            self.done = True
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = usage_of(delta.get("usage") or {})
            return [self._chunk({}, finish), last]
        return []  # content-end, citations, debug and event types added later


# ---------------------------------------------------------------- the provider


class CohereProvider:
    name: str = NAME
    model_prefixes: tuple[str, ...] = ("command",)
    env_hint = "COHERE_API_KEY"
    known_models: tuple[str, ...] = ("command-a-03-2025", "command-r-plus-08-2024", "command-r7b-12-2024")

    def credential(self, stored: Credential | None) -> Credential | None:
        return env_credential(stored, "COHERE_API_KEY", "COHERE_BASE_URL", DEFAULT_BASE_URL)

    def check(self, body: dict[str, Any]) -> None:
        for param in UNSUPPORTED:
            value = body.get(param)
            if value is not None and value is not False and value != {}:
                raise unsupported_parameter(self.name, param)
        n = body.get("n")
        if n is not None and n != 1:
            raise unsupported_parameter(self.name, "n", "Cohere returns a single choice.")
        modalities = body.get("modalities")
        if modalities and set(modalities) != {"text"}:
            raise unsupported_parameter(self.name, "modalities", "Only text output is translated.")
        if body.get("tools") and body.get("parallel_tool_calls") is False:
            raise unsupported_parameter(
                self.name, "parallel_tool_calls", "Cohere cannot be kept from calling several tools at once."
            )

    def _request(
        self, body: dict[str, Any], model: str, cred: Credential
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        self.check(body)
        base = cred.base_url.rstrip("/").removesuffix("/v2").removesuffix("/v1")
        headers = {"content-type": "application/json", "accept": "application/json"}
        if cred.api_key:
            headers["Authorization"] = f"Bearer {cred.api_key}"
        return f"{base}/v2/chat", to_cohere(body, model), headers

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        url, upstream, headers = self._request(body, model, cred)
        upstream.pop("stream", None)
        data = await post_json(self.name, url, upstream, headers, cred.secrets())
        return from_cohere(data, model)

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        url, upstream, headers = self._request(body, model, cred)
        upstream["stream"] = True
        headers["accept"] = "text/event-stream"
        translator = StreamTranslator(model, cred.secrets())
        # post_sse is an async generator: close it (and its HTTP response) even if our caller stops early.
        events = cast(
            AsyncGenerator[tuple[str, bytes], None], post_sse(self.name, url, upstream, headers, cred.secrets())
        )
        async with aclosing(events):
            async for event, data in events:
                if translator.done:
                    continue
                for chunk in translator.feed(event, parse_event(self.name, data)):
                    yield chunk
        if not translator.done:
            raise bad_gateway("Provider `cohere` ended the stream early.", code="upstream_stream_broken")
