"""Pure translation of the inbound Anthropic Messages API (gateway/inbound_anthropic.py).

Besides unit checks, the official `anthropic` SDK is the judge of the shapes: its pydantic types
validate our Message and stream events, and an SDK client whose HTTP transport is an in-process
function (no socket) parses our JSON, our SSE stream (its MessageStream accumulation included) and
our error bodies exactly as it would parse Anthropic's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from pydantic import TypeAdapter

from gateway.errors import GatewayError
from gateway.inbound_anthropic import (
    MessageStream,
    error_body,
    error_event,
    error_type,
    to_message,
    to_openai,
    usage_of,
)
from gateway.validation import validate_chat

EVENTS: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
USER: Any = [{"role": "user", "content": "hi"}]


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "smart", "max_tokens": 64, "messages": USER, **extra}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "up", "choices": [choice], **extra}


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    usage["prompt_tokens_details"] = {"cached_tokens": cached}  # type: ignore[assignment]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def tool_chunk(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


def completion(message: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }


def frames_of(raw: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """SSE frames as (event name, data), checking each frame's shape on the way."""
    out = []
    for frame in raw:
        assert frame.endswith(b"\n\n") and frame.count(b"\n") == 3
        name_line, data_line = frame.decode().split("\n")[:2]
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == name_line[7:]  # Anthropic repeats the event name as the data's type
        out.append((name_line[7:], data))
    return out


def sdk(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    """The official client, its transport an in-process function: the SDK's own parsing, no network."""
    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="ot-test", base_url="http://engine.test", http_client=http, max_retries=0)


# ---------------------------------------------------------------- requests


def test_full_request_translation() -> None:
    request = {
        "model": "smart",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "cache_control": {}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me "},
                    {"type": "text", "text": "check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "here you go"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no data", "is_error": True},
                ],
            },
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "u-42"},
        "stream": True,
        "top_k": None,
        "service_tier": "auto",
    }
    out = to_openai(request)
    assert out == {
        "model": "smart",
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                ],
            },
            # Tool results lead (in their order), the user's text follows in its own message.
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no data"},
            {"role": "user", "content": [{"type": "text", "text": "here you go"}]},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER["input_schema"],
                    "description": "Weather for a city",
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "user": "u-42",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert validate_chat(out) is out  # the engine's own chat validation accepts the result


def test_system_prompt_forms() -> None:
    assert to_openai(body(system="Be brief."))["messages"][0] == {"role": "system", "content": "Be brief."}
    assert to_openai(body(system=""))["messages"] == USER  # an empty system prompt adds nothing
    assert to_openai(body(system=[]))["messages"] == USER
    assert "stream" not in to_openai(body(stream=False)) and "stream_options" not in to_openai(body())


def test_images_become_image_url_parts_in_order() -> None:
    content = [
        {"type": "text", "text": "compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    parts = to_openai(body(messages=[{"role": "user", "content": content}]))["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_tool_results_with_text_blocks_and_only_tools() -> None:
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}],
    }
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [result]},
    ]
    out = to_openai(body(messages=history))["messages"]
    # An assistant turn of tool calls only has null content, as OpenAI sends it; `{}` input → "{}".
    assert out[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert out[2:] == [{"role": "tool", "tool_call_id": "t1", "content": "line 1\nline 2"}]
    validate_chat(to_openai(body(messages=history)))


def test_assistant_turns() -> None:
    history = [
        *USER,
        {"role": "assistant", "content": "plain"},
        {"role": "user", "content": "and?"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "ok"}],
        },
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": []},  # an empty prefill
    ]
    out = to_openai(body(messages=history))["messages"]
    assert out[1] == {"role": "assistant", "content": "plain"}
    assert out[3] == {"role": "assistant", "content": "ok"}  # thinking blocks are dropped from history
    assert out[5] == {"role": "assistant", "content": ""}
    validate_chat(to_openai(body(messages=history)))


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    out = to_openai(body(tools=[WEATHER], tool_choice=choice))
    assert out["tool_choice"] == expected and "parallel_tool_calls" not in out
    parallel = to_openai(body(tools=[WEATHER], tool_choice={**choice, "disable_parallel_tool_use": True}))
    assert parallel.get("parallel_tool_calls") is (None if choice["type"] == "none" else False)


def test_tool_choice_without_tools() -> None:
    # auto/none ask for nothing without tools (OpenAI would reject a lone tool_choice); any/tool cannot be met.
    assert "tool_choice" not in to_openai(body(tool_choice={"type": "auto"}))
    assert "tool_choice" not in to_openai(body(tools=[], tool_choice={"type": "none"}))
    with pytest.raises(GatewayError) as err:
        to_openai(body(tool_choice={"type": "any"}))
    assert err.value.status == 400 and err.value.param == "tool_choice"


def test_tool_definitions() -> None:
    tools = [{"name": "a", "input_schema": {"type": "object"}}, {**WEATHER, "type": "custom", "strict": True}]
    out = to_openai(body(tools=tools))["tools"]
    assert out[0] == {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}
    assert out[1]["function"]["strict"] is True and out[1]["function"]["description"] == "Weather for a city"


def test_structured_output_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    out = to_openai(body(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    validate_chat(out)
    assert "response_format" not in to_openai(body(output_config={}))


def test_disabled_thinking_and_null_top_k_pass() -> None:
    assert to_openai(body(thinking={"type": "disabled"}, top_k=None))["messages"] == USER


def block_msg(*blocks: Any, role: str = "user") -> dict[str, Any]:
    return body(messages=[{"role": role, "content": list(blocks)}])


@pytest.mark.parametrize(
    "request_body, status, param",
    [
        ([], 400, None),
        ({"max_tokens": 5, "messages": USER}, 400, "model"),
        (body(model=""), 400, "model"),
        ({"model": "m", "messages": USER}, 400, "max_tokens"),
        (body(max_tokens=0), 400, "max_tokens"),
        (body(max_tokens=True), 400, "max_tokens"),
        (body(max_tokens="64"), 400, "max_tokens"),
        ({"model": "m", "max_tokens": 5}, 400, "messages"),
        (body(messages=[]), 400, "messages"),
        (body(messages={"role": "user"}), 400, "messages"),
        (body(messages=["hi"]), 400, "messages.0"),
        (body(messages=[{"role": "system", "content": "x"}]), 400, "messages.0.role"),
        (body(messages=[{"role": "user", "content": 3}]), 400, "messages.0.content"),
        (body(messages=[{"role": "user", "content": []}]), 400, "messages.0.content"),
        (block_msg("text"), 400, "messages.0.content.0"),
        (block_msg({"text": "no type"}), 400, "messages.0.content.0"),
        (block_msg({"type": "text", "text": 1}), 400, "messages.0.content.0.text"),
        (block_msg({"type": "image", "source": {"type": "base64", "data": "x"}}), 400, "messages.0.content.0.source"),
        (block_msg({"type": "image", "source": {"type": "ftp"}}), 400, "messages.0.content.0.source"),
        (block_msg({"type": "image", "source": {"type": "file", "file_id": "f"}}), 422, "messages.0.content.0.source"),
        (block_msg({"type": "document", "source": {}}), 422, "messages.0.content.0"),
        (block_msg({"type": "tool_result", "tool_use_id": "t"}, role="assistant"), 422, "messages.0.content.0"),
        (block_msg({"type": "tool_use", "id": "t", "name": "f", "input": {}}), 422, "messages.0.content.0"),
        (block_msg({"type": "tool_use", "name": "f", "input": {}}, role="assistant"), 400, "messages.0.content.0"),
        (block_msg({"type": "tool_result"}), 400, "messages.0.content.0.tool_use_id"),
        (
            block_msg({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}),
            422,
            "messages.0.content.0.content.0",
        ),
        (body(system=5), 400, "system"),
        (body(system=[{"type": "image"}]), 422, "system.0"),
        (body(temperature="hot"), 400, "temperature"),
        (body(top_p=True), 400, "top_p"),
        (body(stop_sequences="END"), 400, "stop_sequences"),
        (body(stream="yes"), 400, "stream"),
        (body(metadata="u"), 400, "metadata"),
        (body(metadata={"user_id": 7}), 400, "metadata.user_id"),
        (body(tools={"name": "f"}), 400, "tools"),
        (body(tools=[{"name": "f"}]), 400, "tools.0"),
        (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), 422, "tools.0"),
        (body(tools=[WEATHER], tool_choice={"type": "maybe"}), 400, "tool_choice"),
        (body(tools=[WEATHER], tool_choice={"type": "tool"}), 400, "tool_choice.name"),
        (body(top_k=5), 422, "top_k"),
        (body(thinking={"type": "enabled", "budget_tokens": 1024}), 422, "thinking"),
        (body(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]), 422, "mcp_servers"),
        (body(output_config={"effort": "high"}), 422, "output_config.effort"),
        (body(output_config={"format": {"type": "json_object"}}), 400, "output_config"),
    ],
)
def test_bad_requests(request_body: Any, status: int, param: str | None) -> None:
    with pytest.raises(GatewayError) as err:
        to_openai(request_body)
    assert (err.value.status, err.value.param) == (status, param)
    assert err.value.code == ("unsupported_parameter" if status == 422 else None)
    assert err.value.message  # a sentence for the caller, never empty


def test_what_the_sdk_sends_translates() -> None:
    """The request body as the SDK itself serialises it (typed params, tool helpers) goes through."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        # SDK 2.x sends the key as `Authorization: Bearer` (1.x sent `x-api-key`): the engine takes both.
        assert request.url.path == "/v1/messages" and request.headers["authorization"] == "Bearer ot-test"
        seen.append(to_openai(orjson.loads(request.content)))
        return httpx2.Response(200, json=to_message(completion({"content": "ok"}, "stop"), "smart"))

    sdk(handler).messages.create(
        model="smart",
        max_tokens=100,
        system=[{"type": "text", "text": "sys"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "P"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        stop_sequences=["X"],
        extra_body={"temperature": 0.5},  # SDK 2.x no longer types the sampling parameters
        metadata={"user_id": "u"},
    )
    out = seen[0]
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool"]
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False and out["user"] == "u"
    assert out["temperature"] == 0.5 and out["stop"] == ["X"]
    validate_chat(out)


# ---------------------------------------------------------------- responses


def test_text_message_validates_as_the_sdk_message() -> None:
    out = to_message(completion({"content": "Hello!", "refusal": None}, "stop"), "smart")
    assert out == {
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": "smart",  # the caller's name, not the upstream's
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    message = anthropic.types.Message.model_validate(out)
    assert message.content[0].type == "text" and message.usage.input_tokens == 10


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{not json"}},
        {"id": "call_3", "type": "function", "function": {"name": "g", "arguments": "[1, 2]"}},
        {"type": "function", "function": {"name": "h", "arguments": ""}},
    ]
    out = to_message(completion({"content": "Checking.", "tool_calls": calls}, "tool_calls"), "smart")
    message = anthropic.types.Message.model_validate(out)
    assert message.stop_reason == "tool_use"
    text, *uses = message.content
    assert text.type == "text" and text.text == "Checking."
    assert [(u.id, u.name, u.input) for u in uses if u.type == "tool_use"][:3] == [
        ("call_1", "get_weather", {"city": "Paris"}),
        ("call_2", "f", {}),  # invalid JSON → {}
        ("call_3", "g", {}),  # not an object → {}
    ]
    last = uses[3]
    assert last.type == "tool_use" and last.id.startswith("toolu_") and last.input == {}
    # Tool calls only: no empty text block.
    only = to_message(completion({"content": None, "tool_calls": calls[:1]}, "tool_calls"), "m")
    assert [b["type"] for b in only["content"]] == ["tool_use"]


@pytest.mark.parametrize(
    "finish, tools, expected",
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("content_filter", False, "refusal"),
        (None, False, "end_turn"),
        ("something_new", False, "end_turn"),
        ("stop", True, "tool_use"),  # a provider that says "stop" after calling tools
        ("length", True, "max_tokens"),
    ],
)
def test_stop_reasons(finish: str | None, tools: bool, expected: str) -> None:
    message: dict[str, Any] = {"content": "x"}
    if tools:
        message["tool_calls"] = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    out = to_message(completion(message, finish), "m")
    assert out["stop_reason"] == expected
    anthropic.types.Message.model_validate(out)


def test_usage_and_odd_completions() -> None:
    # Anthropic's input_tokens exclude cache reads; OpenAI's prompt_tokens include them.
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
    assert usage_of(usage) == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }
    assert usage_of(None)["input_tokens"] == 0 and usage_of({"prompt_tokens_details": None})["output_tokens"] == 0
    bare = to_message({"choices": []}, "m")
    assert bare["id"].startswith("msg_") and len(bare["id"]) > 10 and bare["content"] == []
    assert bare["usage"]["input_tokens"] == 0
    anthropic.types.Message.model_validate(bare)
    refused = to_message(completion({"content": None, "refusal": "I can't."}, "content_filter"), "m")
    assert refused["content"] == [{"type": "text", "text": "I can't."}] and refused["stop_reason"] == "refusal"


def test_the_sdk_parses_our_message() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        chat = to_openai(orjson.loads(request.content))
        last = chat["messages"][-1]["content"]
        usage = {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}
        return httpx2.Response(
            200, json=to_message(completion({"content": f"You said: {last}"}, "stop", usage), "smart")
        )

    message = sdk(handler).messages.create(model="smart", max_tokens=10, messages=[{"role": "user", "content": "yo"}])
    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].type == "text" and message.content[0].text == "You said: yo"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (5, 4, 2)


# ---------------------------------------------------------------- streams


def run_stream(chunks: list[dict[str, Any]], model: str = "smart") -> list[bytes]:
    stream = MessageStream(model)
    out: list[bytes] = []
    for c in chunks:
        out += stream.feed(c)
    return out + stream.close()


TEXT_CHUNKS = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hello"}),
    chunk({"content": " there"}),
    chunk({}, "stop"),
    usage_chunk(12, 2, cached=5),
]


def test_text_stream_events() -> None:
    events = frames_of(run_stream(TEXT_CHUNKS))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_chatcmpl-1" and start["model"] == "smart" and start["content"] == []
    assert start["usage"] == {"input_tokens": 0, "output_tokens": 0} and start["stop_reason"] is None
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Hello"} and events[2][1]["index"] == 0
    assert events[4][1] == {"type": "content_block_stop", "index": 0}
    assert events[5][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[5][1]["usage"] == {
        "input_tokens": 7,
        "output_tokens": 2,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 0,
    }
    assert events[6][1] == {"type": "message_stop"}
    for _, data in events:
        EVENTS.validate_python(data)  # every event is one of the SDK's RawMessageStreamEvent types


def test_text_then_parallel_tool_calls() -> None:
    chunks = [
        chunk({"role": "assistant", "content": None}),
        chunk({"content": "Let me check."}),
        tool_chunk(0, "", "call_a", "get_weather"),
        tool_chunk(0, '{"city":'),
        tool_chunk(0, ' "Paris"}'),
        tool_chunk(1, '{"city": "Oslo"}', "call_b", "get_weather"),
        chunk({}, "tool_calls"),
        usage_chunk(20, 9),
    ]
    events = frames_of(run_stream(chunks))
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    json_deltas = [
        (d["index"], d["delta"]["partial_json"])
        for n, d in events
        if d.get("delta", {}).get("type") == "input_json_delta"
    ]
    assert json_deltas == [(1, '{"city":'), (1, ' "Paris"}'), (2, '{"city": "Oslo"}')]  # no empty pieces
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    for _, data in events:
        EVENTS.validate_python(data)


def test_stream_edge_cases() -> None:
    # Nothing arrived at all: still a well-formed, empty message.
    assert [n for n, _ in frames_of(MessageStream("m").close())] == ["message_start", "message_delta", "message_stop"]
    # close() is idempotent; an explicit usage overrides what the chunks said; length → max_tokens.
    stream = MessageStream("m")
    stream.feed(chunk({"content": "abc"}, "length"))
    stream.feed(usage_chunk(1, 1))
    closing = frames_of(stream.close({"prompt_tokens": 30, "completion_tokens": 4}))
    assert closing[-2][1]["usage"]["input_tokens"] == 30 and closing[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert stream.close() == [] and stream.feed(chunk({"content": "late"})) == []
    # Other choices are ignored; a tool call whose provider says "stop" still ends in tool_use;
    # a call without an id gets one.
    events = frames_of(
        run_stream(
            [
                {"id": "x", "choices": [{"index": 1, "delta": {"content": "nope"}}]},
                tool_chunk(0, "{}"),
                chunk({}, "stop"),
            ]
        )
    )
    assert [n for n, _ in events].count("content_block_start") == 1
    assert events[1][1]["content_block"]["id"].startswith("toolu_")
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 0  # no usage chunk came
    # Text after a tool call opens a new text block.
    names = [n for n, _ in frames_of(run_stream([tool_chunk(0, "{}", "c", "f"), chunk({"content": "done"})]))]
    assert names.count("content_block_start") == 2 and names.count("content_block_stop") == 2


def stream_handler(
    chunks: list[dict[str, Any]], fail: GatewayError | None = None
) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        chat = to_openai(orjson.loads(request.content))
        assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
        stream = MessageStream(chat["model"])
        raw: list[bytes] = []
        for c in chunks:
            raw += stream.feed(c)
        raw += [stream.error_event(fail, "trace-1")] if fail else stream.close()
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(raw))

    return handler


def test_the_sdk_accumulates_our_text_stream() -> None:
    client = sdk(stream_handler(TEXT_CHUNKS))
    with client.messages.stream(model="smart", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Hello", " there"]
    assert final.content[0].type == "text" and final.content[0].text == "Hello there"
    assert final.stop_reason == "end_turn" and final.model == "smart"
    # message_delta's cumulative counts replace message_start's zeros in the SDK's snapshot.
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (7, 2, 5)


def test_the_sdk_accumulates_our_tool_stream() -> None:
    chunks = [
        tool_chunk(0, "", "call_a", "get_weather"),
        tool_chunk(0, '{"ci'),
        tool_chunk(0, 'ty": "Paris"}'),
        chunk({}, "tool_calls"),
        usage_chunk(3, 4),
    ]
    client = sdk(stream_handler(chunks))
    with client.messages.stream(
        model="smart",
        max_tokens=10,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and (block.id, block.name, block.input) == (
        "call_a",
        "get_weather",
        {"city": "Paris"},
    )
    assert final.stop_reason == "tool_use"
    # The raw events through the SDK's own low-level stream (stream=True) parse too.
    raw = client.messages.create(model="smart", max_tokens=10, messages=USER, stream=True)
    assert [e.type for e in raw][-2:] == ["message_delta", "message_stop"]


def test_an_error_mid_stream_raises_in_the_sdk() -> None:
    fail = GatewayError(502, "upstream broke", type="server_error", code="upstream_stream_broken")
    client = sdk(stream_handler(TEXT_CHUNKS[:2], fail))
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        client.messages.stream(model="smart", max_tokens=10, messages=USER) as stream,
    ):
        got.extend(stream.text_stream)
    assert got == ["Hello"]
    assert err.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream broke"},
        "request_id": "trace-1",
    }


def test_error_event_frame() -> None:
    exc = GatewayError(529, "Overloaded", type="server_error")
    assert error_event(exc) == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    stream = MessageStream("m")
    stream.feed(chunk({"content": "a"}))
    assert stream.error_event(exc) == error_event(exc) and stream.close() == []  # no message_stop after an error
    # Not a RawMessageStreamEvent: the SDK reads `event: error` apart, as an ErrorResponse.
    anthropic.types.ErrorResponse.model_validate(orjson.loads(error_event(exc).split(b"data: ")[1]))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "status, kind",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (408, "invalid_request_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types(status: int, kind: str) -> None:
    assert error_type(status) == kind
    payload = orjson.loads(error_body(GatewayError(status, "nope")))
    assert payload == {"type": "error", "error": {"type": kind, "message": "nope"}}
    if kind != "request_too_large":  # documented by Anthropic, but absent from the SDK 2.14 ErrorObject union
        anthropic.types.ErrorResponse.model_validate(payload)


def test_error_body_request_id() -> None:
    payload = orjson.loads(error_body(GatewayError(404, "gone"), request_id="req_1"))
    assert payload["request_id"] == "req_1"
    assert anthropic.types.ErrorResponse.model_validate(payload).request_id == "req_1"


@pytest.mark.parametrize(
    "exc, sdk_error",
    [
        (GatewayError(400, "bad", param="max_tokens"), anthropic.BadRequestError),
        (GatewayError(401, "who?"), anthropic.AuthenticationError),
        (GatewayError(403, "no"), anthropic.PermissionDeniedError),
        (GatewayError(404, "The model `x` does not exist."), anthropic.NotFoundError),
        (GatewayError(413, "too big"), anthropic.RequestTooLargeError),
        (GatewayError(422, "top_k", code="unsupported_parameter"), anthropic.UnprocessableEntityError),
        (GatewayError(429, "slow down", type="rate_limit_error"), anthropic.RateLimitError),
        (GatewayError(500, "oops", type="server_error"), anthropic.InternalServerError),
        (GatewayError(502, "upstream", type="server_error"), anthropic.InternalServerError),
        (GatewayError(504, "timeout", type="server_error"), anthropic.InternalServerError),
        (GatewayError(529, "busy", type="server_error"), anthropic.OverloadedError),
    ],
)
def test_the_sdk_raises_its_usual_errors(exc: GatewayError, sdk_error: type[Exception]) -> None:
    client = sdk(
        lambda request: httpx2.Response(
            exc.status, content=error_body(exc), headers={"content-type": "application/json"}
        )
    )
    with pytest.raises(sdk_error) as err:
        client.messages.create(model="smart", max_tokens=10, messages=USER)
    assert isinstance(err.value, anthropic.APIStatusError) and err.value.status_code == exc.status
    assert err.value.body["error"]["message"] == exc.message  # type: ignore[index]
