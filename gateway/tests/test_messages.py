"""Pure translation of the inbound Anthropic Messages API (gateway/messages.py)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from gateway.errors import GatewayError
from gateway.messages import MessageStream, error_body, to_message, to_openai


def test_request_translation() -> None:
    body = {
        "model": "smart",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": True,
    }
    out = to_openai(body)
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
    ]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"] and out["user"] == "u1" and out["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": "m", "max_tokens": 5, "top_k": 3, "messages": [{"role": "user", "content": "x"}]}, "top_k"),
    ],
)
def test_bad_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as err:
        to_openai(body)
    assert err.value.param == param and err.value.status in (400, 422)


def test_message_and_usage_validate_as_sdk_types() -> None:
    completion = {
        "id": "abc",
        "choices": [
            {
                "message": {
                    "content": "hi",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"x": 2}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}},
    }
    message = anthropic.types.Message.model_validate(to_message(completion, "smart"))
    assert message.stop_reason == "tool_use" and message.content[1].input == {"x": 2}  # type: ignore[union-attr]
    assert message.usage.input_tokens == 6 and message.usage.cache_read_input_tokens == 4


def test_stream_blocks_switch_from_text_to_tools() -> None:
    stream = MessageStream("m")
    frames = stream.feed({"id": "x", "choices": [{"delta": {"content": "Let me check."}}]})
    frames += stream.feed(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}}]}
    )
    frames += stream.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}}]})
    frames += stream.feed({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})
    frames += stream.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    frames += stream.close()
    names = [line[7:] for line in frames.decode().splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert b'"stop_reason":"tool_use"' in frames and b'"output_tokens":2' in frames


def test_error_body_types() -> None:
    assert b'"rate_limit_error"' in error_body(GatewayError(429, "slow down"))
    assert b'"api_error"' in error_body(GatewayError(502, "upstream"))
