"""Bedrock's Converse wire format translated to and from OpenAI Chat Completions: pure functions and
a stream translator, testable without a network. `bedrock.py` adds credentials, SigV4 signing and
the HTTP calls.

OpenAI parameters without a Converse equivalent: `n`, `seed`, `logprobs`, `top_logprobs`,
`logit_bias` and the penalties are refused (422, in `BedrockProvider.check`); `parallel_tool_calls`
and `user` are ignored (Converse has no such controls); `response_format` becomes a system
instruction (asked, not constrained); `tool_choice: "none"` leaves the tools out (Converse has no
"none").
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_gateway, bad_request, unsupported_parameter

from .base import redact

NAME = "bedrock"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
# In-stream exceptions worth another try (before the first byte reached the caller).
TRANSIENT_EXCEPTIONS = ("internalServerException", "serviceUnavailableException", "modelStreamErrorException")


# ---------------------------------------------------------------- OpenAI → Converse


def _text_of(content: Any, role: str) -> str:
    """Plain text of a system/developer message: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise bad_request(f"Invalid content in a `{role}` message.", param="messages")


def _image_format(name: str) -> str:
    fmt = IMAGE_FORMATS.get(name.lower())
    if fmt is None:
        raise unsupported_parameter(NAME, "messages", "Bedrock accepts png, jpeg, gif and webp images.")
    return fmt


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request("An `image_url` part needs a `url`.", param="messages")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type.startswith("image/"):
            raise bad_request("Image data URLs must be base64-encoded images.", param="messages")
        # The JSON wire form of a Converse blob is its base64 text: passed through, not decoded.
        return {"image": {"format": _image_format(media_type[6:]), "source": {"bytes": data.strip()}}}
    if url.startswith("s3://"):
        _, dot, ext = url.rpartition(".")
        if not dot:
            raise unsupported_parameter(
                NAME, "messages", "Name s3:// images with their extension (.png, .jpeg, .gif, .webp)."
            )
        return {"image": {"format": _image_format(ext), "source": {"s3Location": {"uri": url}}}}
    if url.startswith(("http://", "https://")):
        raise unsupported_parameter(
            NAME,
            "messages",
            "Bedrock takes images as base64 data URLs or s3:// URLs; the gateway does not fetch image URLs "
            "for the caller.",
        )
    raise bad_request("Image URLs must be data:, s3:// or http(s) URLs.", param="messages")


def _content_blocks(content: Any, role: str) -> list[dict[str, Any]]:
    """A message's content as Converse blocks (empty text is dropped: Converse rejects blank text)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"Invalid content in a `{role}` message.", param="messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind) or ""
            if text:
                blocks.append({"text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise unsupported_parameter(NAME, "messages", f"Content part type `{kind}` cannot be translated.")
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
        blocks.append({"toolUse": {"toolUseId": call.get("id"), "name": fn.get("name"), "input": args}})
    return blocks


def _tool_result_block(msg: dict[str, Any]) -> dict[str, Any]:
    """A `tool` message as a toolResult block: a JSON object as `json`, anything else as text."""
    content = _content_blocks(msg.get("content"), "tool") or [{"text": ""}]
    if len(content) == 1 and "text" in content[0]:
        text = content[0]["text"]
        try:
            value = orjson.loads(text) if text.lstrip().startswith("{") else None
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            content = [{"json": value}]
    return {"toolResult": {"toolUseId": msg.get("tool_call_id"), "content": content}}


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
            blocks = [_tool_result_block(msg)]
        else:
            raise bad_request(f"Unsupported message role `{role}`.", param="messages")
        if not blocks:
            continue  # e.g. an assistant message with content "": Converse rejects empty turns
        # Converse requires strictly alternating roles: merge consecutive turns of one role.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Tool results first in a user turn (Claude requires it; stable sort keeps the rest in order).
        turn["content"].sort(key=lambda b: "toolResult" not in b)
    return system, turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise unsupported_parameter(NAME, "tools", f"Tool type `{tool.get('type')}` cannot be translated.")
        fn = tool.get("function") or {}
        spec: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
        out.append({"toolSpec": spec})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"tool": {"name": choice["function"]["name"]}}
    raise bad_request("Invalid `tool_choice`.", param="tool_choice")


def _json_instruction(response_format: Any) -> str | None:
    """Converse has no JSON mode for every model: `response_format` becomes a system instruction
    asking for JSON only, with the schema for `json_schema` (best effort: asked, not constrained)."""
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
    raise unsupported_parameter(NAME, "response_format", f"Type `{kind}` cannot be translated.")


def to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request body as a Converse request body (the model id goes in the URL).
    `metadata`, `user`, `stream` and `stream_options` are not sent: Converse always reports usage."""
    system, turns = _messages(body.get("messages") or [])
    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = [{"text": text} for text in system]
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        out["inferenceConfig"] = config
    choice = body.get("tool_choice")
    if body.get("tools") and choice != "none":  # Converse has no "none": the tools are left out
        tool_config: dict[str, Any] = {"tools": _tools(body["tools"])}
        if choice is not None:
            tool_config["toolChoice"] = _tool_choice(choice)
        out["toolConfig"] = tool_config
    return out


# ---------------------------------------------------------------- Converse → OpenAI


def usage_of(usage: dict[str, Any]) -> dict[str, Any]:
    """Converse usage as OpenAI usage: `inputTokens` counts only uncached input, so tokens read from
    or written to the prompt cache are added back into `prompt_tokens`."""
    cached = int(usage.get("cacheReadInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cached + int(usage.get("cacheWriteInputTokens") or 0)
    completion = int(usage.get("outputTokens") or 0)
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


def from_converse(resp: dict[str, Any], model: str, response_id: str = "") -> dict[str, Any]:
    """A Converse response as an OpenAI `chat.completion` object."""
    output = resp.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    blocks = message.get("content") if isinstance(message, dict) else None
    if not isinstance(blocks, list):
        raise bad_gateway("Provider `bedrock` returned a response without a message.")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if "text" in block:
            texts.append(block.get("text") or "")
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            function = {"name": use.get("name"), "arguments": orjson.dumps(use.get("input") or {}).decode()}
            tool_calls.append({"id": use.get("toolUseId"), "type": "function", "function": function})
        # reasoningContent and other block types are not part of the OpenAI answer
    out_message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        out_message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{response_id or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "finish_reason": finish_reason(resp.get("stopReason")),
                "logprobs": None,
            }
        ],
        "usage": usage_of(resp.get("usage") or {}),
    }


def stream_exception(kind: str, message: str, secrets: tuple[str, ...] = ()) -> GatewayError:
    """An exception message inside a ConverseStream response (`:message-type` exception/error)."""
    message = redact(message or "stream error", secrets)
    if kind == "throttlingException":
        return GatewayError(429, f"bedrock: {message}", type="rate_limit_error", code="rate_limit", retryable=True)
    retryable = kind in TRANSIENT_EXCEPTIONS
    return bad_gateway(f"Provider `bedrock` failed mid-stream ({kind}): {message}", retryable=retryable)


class StreamTranslator:
    """Turns ConverseStream events into OpenAI `chat.completion.chunk` dicts. `feed` returns the
    chunks for one event; once both `messageStop` and `metadata` arrived, `done` is true and the last
    chunk carried usage."""

    def __init__(self, model: str, response_id: str = "") -> None:
        self.id = f"chatcmpl-{response_id or uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.stopped = False
        self.done = False
        self._tools: dict[int, int] = {}  # Converse block index → OpenAI tool_calls index
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

    def _last(self) -> list[dict[str, Any]]:
        if not (self.stopped and self.usage is not None) or self.done:
            return []
        self.done = True
        last = self._chunk({})
        last["choices"] = []
        last["usage"] = usage_of(self.usage)
        return [last]

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        index = int(data.get("contentBlockIndex") or 0)
        if event == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            self._tools[index] = len(self._tools)
            self._tool_has_args[index] = False
            function = {"name": use.get("name"), "arguments": ""}
            return [self._tool_delta(index, {"id": use.get("toolUseId"), "type": "function", "function": function})]
        if event == "contentBlockDelta":
            delta = data.get("delta") or {}
            if delta.get("text"):
                return [self._chunk({"content": delta["text"]})]
            piece = (delta.get("toolUse") or {}).get("input")
            if piece and index in self._tools:
                self._tool_has_args[index] = True
                return [self._tool_delta(index, {"function": {"arguments": piece}})]
            return []  # reasoning and citation deltas are not part of the OpenAI answer
        if event == "contentBlockStop":
            if index in self._tools and not self._tool_has_args[index]:
                # A tool called without arguments: OpenAI clients expect valid JSON, not "".
                self._tool_has_args[index] = True
                return [self._tool_delta(index, {"function": {"arguments": "{}"}})]
            return []
        if event == "messageStop":
            self.stopped = True
            self.finish = finish_reason(data.get("stopReason"))
            return [self._chunk({}, self.finish), *self._last()]
        if event == "metadata":
            self.usage = data.get("usage") or {}
            return self._last()
        return []  # event types added later
