"""POST /v1/messages: Anthropic's Messages API inbound, so apps on the Anthropic SDK can point at the
engine too. The request is translated to the engine's OpenAI form, served by the same path as chat
(any provider, retries, fallbacks, limits, traces), and the answer translated back: a Message
object, or Anthropic's SSE events when streaming.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from .chat import ChatCall
from .errors import GatewayError, bad_request, unsupported_parameter
from .validation import validate_chat

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


# ---------------------------------------------------------------- Anthropic → OpenAI (request)


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    raise bad_request(f"`{where}` must be a string or an array of text blocks.", param=where)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise bad_request("An image block needs a base64 or url source.", param=where)
    return {"type": "image_url", "image_url": {"url": url}}


def _message(msg: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages (tool results become `tool` messages)."""
    where = f"messages.{i}"
    if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
        raise bad_request(f"`{where}.role` must be user or assistant.", param=f"{where}.role")
    role, content = msg["role"], msg.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(f"`{where}.content` must be a string or an array of blocks.", param=f"{where}.content")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image" and role == "user":
            parts.append(_image(block, f"{where}.content.{j}"))
        elif kind == "tool_result" and role == "user":
            text = _text(block.get("content", ""), f"{where}.content.{j}.content")
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
            if block.get("is_error"):
                out[-1]["content"] = f"Error: {text}"
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the engine's providers cannot take them back; the answer stands without
        else:
            raise bad_request(f"Unsupported content block `{kind}` in `{where}`.", param=f"{where}.content.{j}")
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        reply: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            reply["tool_calls"] = calls
        return [reply]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_request("`tools` must be an array.", param="tools")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "name" not in tool:
            raise unsupported_parameter("engine", "tools", "Only custom tools (name, input_schema) are supported.")
        fn = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def to_openai(body: Any) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request (raises 400/422 GatewayErrors)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("`model`: Field required.", param="model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad_request("`max_tokens`: a positive integer is required.", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages`: a non-empty array is required.", param="messages")
    for name in ("top_k", "thinking"):
        if body.get(name) is not None:
            raise unsupported_parameter("engine", name, "It has no equivalent across providers.")
    out: list[dict[str, Any]] = []
    if body.get("system"):
        out.append({"role": "system", "content": _text(body["system"], "system")})
    for i, msg in enumerate(messages):
        out += _message(msg, i)
    chat: dict[str, Any] = {"model": body["model"], "messages": out, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = str(choice.get("type"))
        chat["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name", "")}}
            if kind == "tool"
            else TOOL_CHOICES.get(kind, "auto")
        )
        if choice.get("disable_parallel_tool_use") and body.get("tools"):
            chat["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        chat["user"] = user
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# ---------------------------------------------------------------- OpenAI → Anthropic (response)


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        # Anthropic counts cache reads apart from input tokens; OpenAI includes them.
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": fn.get("name", ""),
                "input": _input(fn.get("arguments", "")),
            }
        )
    return {
        "id": f"msg_{completion.get('id') or uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(completion.get("usage")),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


class MessageStream:
    """OpenAI chunks in, Anthropic stream events out: message_start, content blocks (text, or
    tool_use with input_json_delta pieces), then message_delta and message_stop at the end."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block = -1  # index of the open content block
        self.block_kind = ""
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index → block index
        self.finish = "stop"
        self.usage: dict[str, Any] | None = None

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        frames = self._close_block()
        self.block += 1
        self.block_kind = kind
        return frames + _event("content_block_start", {"index": self.block, "content_block": block})

    def _close_block(self) -> bytes:
        if not self.block_kind:
            return b""
        self.block_kind = ""
        return _event("content_block_stop", {"index": self.block})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        frames = b""
        if not self.started:
            self.started = True
            start: dict[str, Any] = {
                "id": f"msg_{chunk.get('id') or uuid.uuid4().hex}",
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            frames += _event("message_start", {"message": start})
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.block_kind != "text":
                    frames += self._open("text", {"type": "text", "text": ""})
                frames += _event(
                    "content_block_delta",
                    {"index": self.block, "delta": {"type": "text_delta", "text": delta["content"]}},
                )
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                index = call.get("index", 0)
                if index not in self.tool_blocks:
                    block = {"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""), "input": {}}
                    frames += self._open("tool_use", block)
                    self.tool_blocks[index] = self.block
                if fn.get("arguments"):
                    piece = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    frames += _event("content_block_delta", {"index": self.tool_blocks[index], "delta": piece})
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return frames

    def close(self) -> bytes:
        usage = _usage(self.usage)
        delta = {"stop_reason": STOP_REASONS.get(self.finish, "end_turn"), "stop_sequence": None}
        return (
            self._close_block() + _event("message_delta", {"delta": delta, "usage": usage}) + _event("message_stop", {})
        )

    def error(self, exc: GatewayError) -> bytes:
        return b"event: error\ndata: " + error_body(exc) + b"\n\n"


def error_body(exc: GatewayError) -> bytes:
    kind = ERROR_TYPES.get(exc.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": exc.message}})


class MessagesCall(ChatCall):
    endpoint = "messages"

    def parse(self, body: Any) -> dict[str, Any]:
        return validate_chat(to_openai(body))

    def render(self, data: dict[str, Any], body: dict[str, Any]) -> bytes:
        return orjson.dumps(to_message(data, body["model"]))

    def stream_writer(self, body: dict[str, Any]) -> MessageStream:
        return MessageStream(body["model"])

    def error_body(self, exc: GatewayError) -> bytes:
        return error_body(exc)
