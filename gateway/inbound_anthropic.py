"""Anthropic's Messages API inbound (`POST /v1/messages`): pure translation, no I/O.

The engine works in OpenAI Chat Completions internally, so an Anthropic request is turned into an
OpenAI chat request (`to_openai`), and the answer back into Anthropic's shapes: a Message object
(`to_message`), SSE events (`MessageStream`) and error bodies (`error_body`, `error_event`).
The outbound direction (OpenAI → an Anthropic upstream) is gateway/providers/anthropic.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from .errors import GatewayError, bad_request
from .providers.anthropic import FINISH_REASONS

# OpenAI finish_reason → Anthropic stop_reason: the outbound table inverted, its first entry winning
# ("stop" → end_turn, never stop_sequence: which stop sequence ended the answer is not knowable).
STOP_REASONS = {openai: anthropic for anthropic, openai in reversed(FINISH_REASONS.items())}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# Request fields with no equivalent across providers: refused (422) rather than silently dropped.
UNSUPPORTED = ("top_k", "thinking", "mcp_servers", "container", "context_management")
# Per Anthropic's error docs (and the SDK's ErrorType); other 4xx are invalid_request_error, 5xx api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
NUMBER = (int, float)


# ---------------------------------------------------------------- Anthropic → OpenAI (request)


def _unsupported(param: str, detail: str) -> GatewayError:
    message = f"`{param}` is not supported by the engine's Messages API: {detail}"
    return GatewayError(422, message, code="unsupported_parameter", param=param)


def _number(value: Any) -> bool:
    return isinstance(value, NUMBER) and not isinstance(value, bool)


def _text_blocks(content: Any, where: str) -> str:
    """A string, or a list of text blocks, as one string (system prompt, tool result)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"`{where}` must be a string or an array of text blocks.", param=where)
    texts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise bad_request(f"`{where}.{j}` must be a content block object.", param=f"{where}.{j}")
        kind = block.get("type")
        if kind != "text":
            # e.g. an image inside a tool result: OpenAI tool messages carry text only.
            raise _unsupported(f"{where}.{j}", f"Only text blocks are supported here, not `{kind}`.")
        if not isinstance(block.get("text"), str):
            raise bad_request(f"`{where}.{j}.text` must be a string.", param=f"{where}.{j}.text")
        texts.append(block["text"])
    return "\n".join(texts)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise bad_request(f"`{where}.source` needs `media_type` and `data` strings.", param=f"{where}.source")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        url = source["url"]
    elif kind == "file":
        raise _unsupported(f"{where}.source", "Files API images are not supported.")
    else:
        raise bad_request(f"`{where}.source` must be a base64 or url image source.", param=f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise bad_request(f"`{where}` needs `id` and `name` strings.", param=where)
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def _tool_message(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("tool_use_id"), str):
        raise bad_request(f"`{where}.tool_use_id` must be a string.", param=f"{where}.tool_use_id")
    text = _text_blocks(block.get("content", ""), f"{where}.content")
    if block.get("is_error"):
        # OpenAI tool messages have no error flag: say it in the content so the model still knows.
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def _message(msg: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: a user message's tool results become `tool` messages."""
    where = f"messages.{i}"
    if not isinstance(msg, dict):
        raise bad_request(f"`{where}` must be an object.", param=where)
    role, content = msg.get("role"), msg.get("content")
    if role not in ("user", "assistant"):
        raise bad_request(f"`{where}.role` must be `user` or `assistant`, not {role!r}.", param=f"{where}.role")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list) or (role == "user" and not content):
        raise bad_request(
            f"`{where}.content` must be a string or a non-empty array of content blocks.", param=f"{where}.content"
        )
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise bad_request(f"`{at}` must be a content block object with a `type`.", param=at)
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise bad_request(f"`{at}.text` must be a string.", param=f"{at}.text")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            parts.append(_image(block, at))
        elif kind == "tool_result" and role == "user":
            tools.append(_tool_message(block, at))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_call(block, at))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # replayed history from a thinking model: no provider here can take it back
        else:
            raise _unsupported(at, f"Content block type `{kind}` is not supported in a {role} turn.")
    if role == "assistant":
        # A string, not text parts: the one form every provider accepts for assistant history.
        reply: dict[str, Any] = {"role": "assistant", "content": "".join(p["text"] for p in parts)}
        if calls:
            reply["tool_calls"] = calls
            reply["content"] = reply["content"] or None
        return [reply]
    # Tool results first: OpenAI wants `tool` messages right after the assistant's tool_calls, and
    # Anthropic itself requires tool_result blocks to lead the user turn.
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_request("`tools` must be an array.", param="tools")
    out = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise bad_request(f"`tools.{k}` must be an object.", param=f"tools.{k}")
        if tool.get("type") not in (None, "custom"):
            # Anthropic's server tools (web search, bash, ...) run at Anthropic: nothing here runs them.
            raise _unsupported(f"tools.{k}", f"Tool type `{tool['type']}` is not supported.")
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise bad_request(f"`tools.{k}` needs a `name` string and an `input_schema` object.", param=f"tools.{k}")
        fn: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, has_tools: bool, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or kind not in ("auto", "any", "tool", "none"):
        raise bad_request("`tool_choice.type` must be auto, any, tool or none.", param="tool_choice")
    if kind == "tool" and not isinstance(choice.get("name"), str):
        raise bad_request("`tool_choice.name` is required for type `tool`.", param="tool_choice.name")
    if not has_tools:
        if kind in ("any", "tool"):
            raise bad_request(f"`tool_choice` of type `{kind}` needs `tools`.", param="tool_choice")
        return  # auto/none without tools ask for nothing; OpenAI rejects tool_choice without tools
    chat["tool_choice"] = (
        {"type": "function", "function": {"name": choice["name"]}} if kind == "tool" else TOOL_CHOICES[kind]
    )
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def _check_types(body: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        if body.get(name) is not None and not _number(body[name]):
            raise bad_request(f"`{name}` must be a number.", param=name)
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise bad_request("`stop_sequences` must be an array of strings.", param="stop_sequences")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise bad_request("`stream` must be a boolean.", param="stream")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("`metadata` must be an object.", param="metadata")
    user = (metadata or {}).get("user_id")
    if user is not None and not isinstance(user, str):
        raise bad_request("`metadata.user_id` must be a string.", param="metadata.user_id")


def _output_format(config: Any) -> dict[str, Any] | None:
    """`output_config.format` (structured outputs) as OpenAI's `response_format`."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise bad_request("`output_config` must be an object.", param="output_config")
    if config.get("effort") is not None:
        raise _unsupported("output_config.effort", "It has no equivalent across providers.")
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise bad_request("`output_config.format` must be a json_schema format with a `schema`.", param="output_config")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}


def to_openai(body: Any) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request. Raises GatewayError: 400 for a malformed
    request, 422 `unsupported_parameter` for valid Anthropic features no provider here can honour."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("`model`: a model name (string) is required.", param="model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad_request("`max_tokens`: a positive integer is required.", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages`: a non-empty array of messages is required.", param="messages")
    for name in UNSUPPORTED:
        value = body.get(name)
        if value is None or (name == "thinking" and isinstance(value, dict) and value.get("type") == "disabled"):
            continue  # absent, or `thinking: {"type": "disabled"}`, which asks for nothing
        raise _unsupported(name, "It has no equivalent across providers.")
    _check_types(body)

    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text_blocks(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, msg in enumerate(messages):
        out += _message(msg, i)
    chat: dict[str, Any] = {"model": body["model"], "messages": out, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], bool(chat.get("tools")), chat)
    response_format = _output_format(body.get("output_config"))
    if response_format:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat["stream"] = True
        # Anthropic reports usage at the end of every stream; OpenAI only when asked.
        chat["stream_options"] = {"include_usage": True}
    return chat


# ---------------------------------------------------------------- OpenAI → Anthropic (answer)


def usage_of(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage as Anthropic's: input_tokens exclude cache reads (OpenAI's prompt_tokens include them)."""
    usage = usage or {}
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": max(int(usage.get("prompt_tokens") or 0) - cached, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,  # OpenAI-style providers do not report cache writes
    }


def stop_reason(finish_reason: str | None, has_tool_use: bool = False) -> str:
    # Some providers say "stop" after tool calls; Anthropic clients run tools only on "tool_use".
    if has_tool_use and finish_reason in (None, "stop"):
        return "tool_use"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _input(arguments: Any) -> Any:
    """Tool arguments (a JSON string) as the tool_use `input` object; {} when they are not a JSON object."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or message.get("refusal") or ""


def _message_id(openai_id: Any) -> str:
    return f"msg_{openai_id or uuid.uuid4().hex}"


def to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completion as an Anthropic Message object; `model` is the name the caller asked for."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = _text_of(message)
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        tool_id = call.get("id") or f"toolu_{uuid.uuid4().hex}"
        content.append(
            {"type": "tool_use", "id": tool_id, "name": fn.get("name") or "", "input": _input(fn.get("arguments"))}
        )
    return {
        "id": _message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), bool(message.get("tool_calls"))),
        "stop_sequence": None,
        "usage": usage_of(completion.get("usage")),
    }


# ---------------------------------------------------------------- streaming and errors


def _event(name: str, data: dict[str, Any]) -> bytes:
    # Anthropic names each SSE event and repeats the name as the data's `type`.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def _error_payload(exc: GatewayError, request_id: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": "error", "error": {"type": error_type(exc.status), "message": exc.message}}
    if request_id:
        payload["request_id"] = request_id
    return payload


def error_body(exc: GatewayError, request_id: str | None = None) -> bytes:
    """Anthropic's error body for a non-streamed failure; send it with `exc.status` (the SDKs pick the
    exception class by status). `request_id` (e.g. the trace id) is Anthropic's optional top-level field."""
    return orjson.dumps(_error_payload(exc, request_id))


def error_event(exc: GatewayError, request_id: str | None = None) -> bytes:
    """Anthropic's in-stream `event: error` frame, for a failure after the 200 went out."""
    return b"event: error\ndata: " + orjson.dumps(_error_payload(exc, request_id)) + b"\n\n"


class MessageStream:
    """OpenAI chat.completion.chunk dicts in, Anthropic SSE frames out.

    `feed(chunk)` per upstream chunk; `close()` once the upstream ended cleanly (it emits message_delta
    and message_stop: OpenAI's usage chunk comes after the finish_reason chunk, so the end is only
    known then); `error_event(exc)` instead of `close()` when the stream fails after it began.
    """

    def __init__(self, model: str) -> None:
        self.model = model  # the name the caller asked for, as in to_message
        self.started = False
        self.done = False
        self.block = -1  # index of the last content block started
        self.open_kind: str | None = None  # "text" or "tool_use" while a block is open
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index → content block index
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _start(self, openai_id: Any) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": _message_id(openai_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Input tokens are known only from the last chunk: message_delta carries the real counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [_event("message_start", {"message": message})]

    def _close_block(self) -> list[bytes]:
        if self.open_kind is None:
            return []
        self.open_kind = None
        return [_event("content_block_stop", {"index": self.block})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        frames = self._close_block()
        self.block += 1
        self.open_kind = kind
        return [*frames, _event("content_block_start", {"index": self.block, "content_block": block})]

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        fn = call.get("function") or {}
        index = int(call.get("index") or 0)
        frames: list[bytes] = []
        if index not in self.tool_blocks:
            tool_id = call.get("id") or f"toolu_{uuid.uuid4().hex}"
            block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": fn.get("name") or "", "input": {}}
            frames += self._open_block("tool_use", block)
            self.tool_blocks[index] = self.block
        if fn.get("arguments"):
            # OpenAI never interleaves calls; if one did, a late piece still goes to its own block.
            delta = {"type": "input_json_delta", "partial_json": fn["arguments"]}
            frames.append(_event("content_block_delta", {"index": self.tool_blocks[index], "delta": delta}))
        return frames

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        if self.done:
            return []  # nothing may follow message_stop or an error event
        frames = self._start(chunk.get("id"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # Anthropic has one answer; to_openai never asks for more
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self.open_kind != "text":
                    frames += self._open_block("text", {"type": "text", "text": ""})
                frames.append(
                    _event("content_block_delta", {"index": self.block, "delta": {"type": "text_delta", "text": text}})
                )
            for call in delta.get("tool_calls") or ():
                frames += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return frames

    def close(self, usage: dict[str, Any] | None = None) -> list[bytes]:
        """The end of a clean stream. `usage` (OpenAI's shape) overrides the usage seen in the chunks."""
        if self.done:
            return []
        self.done = True
        frames = [*self._start(None), *self._close_block()]
        delta = {"stop_reason": stop_reason(self.finish_reason, bool(self.tool_blocks)), "stop_sequence": None}
        # Counts in message_delta are cumulative and overwrite message_start's in Anthropic's clients.
        frames.append(_event("message_delta", {"delta": delta, "usage": usage_of(usage or self.usage)}))
        frames.append(_event("message_stop", {}))
        return frames

    def error_event(self, exc: GatewayError, request_id: str | None = None) -> bytes:
        """The stream failed after it began: an error frame, and no message_stop afterwards."""
        self.done = True
        return error_event(exc, request_id)
