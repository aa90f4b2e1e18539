"""POST /v1/messages: Anthropic's Messages API inbound, so apps on the Anthropic SDK can point at the
engine too. The request is translated to the engine's OpenAI form (gateway/inbound_anthropic.py),
served by the same path as chat (any provider, retries, fallbacks, limits, traces), and the answer
translated back: a Message object, or Anthropic's SSE events when streaming.
"""

from __future__ import annotations

from typing import Any

import orjson

from .chat import ChatCall
from .errors import GatewayError
from .inbound_anthropic import MessageStream, error_body, to_message, to_openai
from .validation import validate_chat


class _Frames:
    """MessageStream behind the byte-returning writer interface ChatCall streams through."""

    def __init__(self, model: str) -> None:
        self.stream = MessageStream(model)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return b"".join(self.stream.feed(chunk))

    def close(self) -> bytes:
        return b"".join(self.stream.close())

    def error(self, exc: GatewayError) -> bytes:
        return self.stream.error_event(exc)


class MessagesCall(ChatCall):
    endpoint = "messages"

    def parse(self, body: Any) -> dict[str, Any]:
        return validate_chat(to_openai(body))

    def render(self, data: dict[str, Any], body: dict[str, Any]) -> bytes:
        return orjson.dumps(to_message(data, body["model"]))

    def stream_writer(self, body: dict[str, Any]) -> _Frames:
        return _Frames(body["model"])

    def error_body(self, exc: GatewayError) -> bytes:
        return error_body(exc)
