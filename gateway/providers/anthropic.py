"""Anthropic's Messages API (`POST /v1/messages`), translated to and from OpenAI Chat Completions.

Pure translation lives in `to_anthropic`, `from_anthropic` and `StreamTranslator` so it can be
tested without a network; `AnthropicProvider` only adds credentials and the HTTP calls.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

import orjson

from gateway.errors import GatewayError, bad_gateway, bad_request, unsupported_parameter

from .base import Credential, env_credential, redact
from .http import parse_event, post_json, post_sse

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# OpenAI parameters Anthropic has no equivalent for: refused (422) rather than silently dropped.
UNSUPPORTED = ("seed", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias")
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


# ---------------------------------------------------------------- OpenAI → Anthropic


def _text_of(content: Any, role: str) -> str:
    """Plain text of a system/developer/tool message: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise bad_request(f"Invalid content in a `{role}` message.", param="messages")


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request("An `image_url` part needs a `url`.", param="messages")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise bad_request("Image data URLs must be base64-encoded.", param="messages")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request("Image URLs must be http(s) or data: URLs.", param="messages")


def _content_blocks(content: Any, role: str) -> list[dict[str, Any]]:
    """A user/assistant message's content as Anthropic blocks (empty text is dropped: Anthropic rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"Invalid content in a `{role}` message.", param="messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind) or ""
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise unsupported_parameter("anthropic", "messages", f"Content part type `{kind}` cannot be translated.")
    return blocks


def _tool_use_blocks(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls:
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError:
            raise bad_request(
                f"The arguments of tool call `{call.get('id')}` are not valid JSON.", param="messages"
            ) from None
        if not isinstance(args, dict):
            raise bad_request(f"The arguments of tool call `{call.get('id')}` must be a JSON object.", param="messages")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
    return blocks


def _messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Split out system text and build alternating user/assistant turns."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, role)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _content_blocks(content, role)
        elif role == "assistant":
            blocks = _content_blocks(content, role) + _tool_use_blocks(msg.get("tool_calls") or [])
        elif role == "tool":
            role = "user"
            result = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id"),
                "content": _text_of(content, "tool"),
            }
            blocks = [result]
        else:
            raise bad_request(f"Unsupported message role `{role}`.", param="messages")
        if not blocks:
            continue  # e.g. an assistant message with content "": Anthropic rejects empty turns
        # Anthropic requires strictly alternating roles: merge consecutive turns of one role.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Tool results must come first in a user turn (stable sort keeps the rest in order).
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return system, turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise unsupported_parameter("anthropic", "tools", f"Tool type `{tool.get('type')}` cannot be translated.")
        fn = tool.get("function") or {}
        spec: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any]:
    if choice is None:
        result: dict[str, Any] = {"type": "auto"}
    elif isinstance(choice, str) and choice in TOOL_CHOICES:
        result = {"type": TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise bad_request("Invalid `tool_choice`.", param="tool_choice")
    if parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _json_instruction(response_format: Any) -> str | None:
    """Anthropic's Messages API has no JSON mode. Rather than forcing a synthetic tool call (which would
    change the shape of the answer the caller sees), `response_format` becomes a system instruction
    asking for JSON only, with the schema included for `json_schema`. This is best effort: the model is
    asked, not constrained."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return "Respond with a single valid JSON object only: no prose, no Markdown code fences."
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = orjson.dumps(spec.get("schema") or {}).decode()
        return (
            "Respond with a single valid JSON object only (no prose, no Markdown code fences) "
            f"that conforms to this JSON Schema:\n{schema}"
        )
    if kind in (None, "text"):
        return None
    raise unsupported_parameter("anthropic", "response_format", f"Type `{kind}` cannot be translated.")


def to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request body as an Anthropic Messages request body. `metadata` (the engine's
    own field) and `stream_options` (Anthropic always reports usage) are not sent."""
    system, turns = _messages(body.get("messages") or [])
    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        out["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None or body.get("parallel_tool_calls") is False:
            out["tool_choice"] = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if body.get("stream"):
        out["stream"] = True
    return out


# ---------------------------------------------------------------- Anthropic → OpenAI


def usage_of(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage as OpenAI usage: cached prompt tokens are part of `prompt_tokens`."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def from_anthropic(resp: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages response as an OpenAI `chat.completion` object."""
    blocks = resp.get("content")
    if not isinstance(blocks, list):
        raise bad_gateway("Provider `anthropic` returned a response without content.")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{resp.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("model", ""),
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(resp.get("stop_reason")), "logprobs": None}
        ],
        "usage": usage_of(resp.get("usage") or {}),
    }


class StreamTranslator:
    """Turns Anthropic stream events into OpenAI `chat.completion.chunk` dicts. `feed` returns the
    chunks for one event; after `message_stop`, `done` is true and the last chunk carried usage."""

    def __init__(self, model: str, secrets: tuple[str, ...] = ()) -> None:
        self.id = "chatcmpl-"
        self.model = model
        self.created = int(time.time())
        self.secrets = secrets
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None
        self.done = False
        self._tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._tool_has_args: dict[int, bool] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def _tool_delta(self, block_index: int, call: dict[str, Any]) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": self._tools[block_index], **call}]})

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = f"chatcmpl-{message.get('id', '')}"
            self.model = message.get("model") or self.model
            self.usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            index, block = int(data.get("index", 0)), data.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            if block.get("type") == "tool_use":
                self._tools[index] = len(self._tools)
                self._tool_has_args[index] = False
                function = {"name": block.get("name"), "arguments": ""}
                return [self._tool_delta(index, {"id": block.get("id"), "type": "function", "function": function})]
            return []
        if kind == "content_block_delta":
            index, delta = int(data.get("index", 0)), data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [self._chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json") and index in self._tools:
                self._tool_has_args[index] = True
                return [self._tool_delta(index, {"function": {"arguments": delta["partial_json"]}})]
            return []  # thinking and signature deltas are not part of the OpenAI answer
        if kind == "content_block_stop":
            index = int(data.get("index", 0))
            if index in self._tools and not self._tool_has_args[index]:
                # A tool called without arguments: OpenAI clients expect valid JSON, not "".
                return [self._tool_delta(index, {"function": {"arguments": "{}"}})]
            return []
        if kind == "message_delta":
            # Anthropic's usage here is cumulative: it replaces the counts from message_start.
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            self.finish = finish_reason((data.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, self.finish)] if self.finish else []
        if kind == "message_stop":
            self.done = True
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = usage_of(self.usage)
            return [last]
        if kind == "error":
            err = data.get("error")
            err = err if isinstance(err, dict) else {}
            message = redact(str(err.get("message") or "stream error"), self.secrets)
            raise GatewayError(502, f"anthropic: {message}", type="server_error", code="upstream_error")
        return []  # ping and event types added later


# ---------------------------------------------------------------- the provider


class AnthropicProvider:
    name: str = "anthropic"
    model_prefixes: tuple[str, ...] = ("claude-",)
    env_hint = "ANTHROPIC_API_KEY"
    known_models: tuple[str, ...] = (
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-5-haiku-latest",
    )

    def credential(self, stored: Credential | None) -> Credential | None:
        return env_credential(stored, "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", DEFAULT_BASE_URL)

    def check(self, body: dict[str, Any]) -> None:
        for param in UNSUPPORTED:
            # `logprobs: false` or `logit_bias: {}` ask for nothing and pass; `seed: 0` does not.
            value = body.get(param)
            if value is not None and value is not False and value != {}:
                raise unsupported_parameter(self.name, param)
        n = body.get("n")
        if n is not None and n != 1:
            raise unsupported_parameter(self.name, "n", "Anthropic returns a single choice.")

    def _request(
        self, body: dict[str, Any], model: str, cred: Credential
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        self.check(body)
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if cred.api_key:
            headers["x-api-key"] = cred.api_key
        return f"{cred.base_url}/v1/messages", to_anthropic(body, model), headers

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        url, upstream, headers = self._request(body, model, cred)
        upstream.pop("stream", None)
        data = await post_json(self.name, url, upstream, headers, cred.secrets())
        return from_anthropic(data)

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        url, upstream, headers = self._request(body, model, cred)
        upstream["stream"] = True
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
            raise bad_gateway("Provider `anthropic` ended the stream early.", code="upstream_stream_broken")
