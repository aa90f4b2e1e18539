"""The Anthropic provider: pure translation both ways, and real calls to a fake Anthropic server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.providers.anthropic import AnthropicProvider, StreamTranslator, from_anthropic, to_anthropic
from gateway.providers.base import Credential
from gateway.providers.http import close_sessions
from tests.fakes.anthropic_upstream import FakeAnthropic

KEY = "sk-ant-test-SECRET-0123456789"
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ---------------------------------------------------------------- request translation


def test_system_and_developer_messages_become_top_level_system() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            user("hi"),
        ]
    }
    out = to_anthropic(body, "claude-haiku-4-5")
    assert out["system"] == "Be brief.\n\nUse French."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert out["model"] == "claude-haiku-4-5"
    assert out["max_tokens"] == 4096


def test_sampling_fields_and_engine_metadata() -> None:
    body = {
        "messages": [user("hi")],
        "max_completion_tokens": 50,
        "max_tokens": 99,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-42",
        "metadata": {"team": "search"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = to_anthropic(body, "claude-x")
    assert out["max_tokens"] == 50
    assert out["temperature"] == 0.3
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-42"}  # OpenAI's metadata map is not sent
    assert out["stream"] is True
    assert "stream_options" not in out
    assert to_anthropic({"messages": [user("x")], "stop": ["a", "b"], "max_tokens": 7}, "m")["stop_sequences"] == [
        "a",
        "b",
    ]
    assert to_anthropic({"messages": [user("x")], "max_tokens": 7}, "m")["max_tokens"] == 7


def test_tools_tool_calls_and_tool_results() -> None:
    body = {
        "messages": [
            user("Weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "21C"}]},
            user("Which is warmer?"),
        ],
        "tools": [WEATHER_TOOL],
    }
    out = to_anthropic(body, "m")
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert "tool_choice" not in out
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "c2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    # Both tool messages and the following user message merge into one user turn, results first.
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "21C"},
        {"type": "text", "text": "Which is warmer?"},
    ]


def test_consecutive_same_role_messages_merge() -> None:
    messages = [user("a"), {"role": "assistant", "content": ""}, user("b"), {"role": "assistant", "content": "c"}]
    out = to_anthropic({"messages": messages}, "m")
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]


def test_invalid_tool_arguments_are_a_400() -> None:
    bad = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(GatewayError) as exc:
        to_anthropic({"messages": [user("x"), {"role": "assistant", "tool_calls": [bad]}]}, "m")
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice_mapping(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": choice}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_anthropic(body, "m")["tool_choice"] == expected


def test_images() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    out = to_anthropic({"messages": [{"role": "user", "content": content}]}, "m")
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    with pytest.raises(GatewayError) as exc:
        to_anthropic({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "ftp://x"}]}]}, "m")
    assert exc.value.status == 400


def test_response_format_becomes_a_system_instruction() -> None:
    body: dict[str, Any] = {"messages": [{"role": "system", "content": "Be brief."}, user("x")]}
    out = to_anthropic({**body, "response_format": {"type": "json_object"}}, "m")
    assert out["system"].startswith("Be brief.\n\n")
    assert "JSON object only" in out["system"]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    out = to_anthropic({"messages": [user("x")], "response_format": fmt}, "m")
    assert json.dumps(schema, separators=(",", ":")) in out["system"]
    assert "system" not in to_anthropic({"messages": [user("x")], "response_format": {"type": "text"}}, "m")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("seed", 0),
        ("frequency_penalty", 0.5),
        ("presence_penalty", 0.1),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("n", 2),
    ],
)
def test_unsupported_parameters_are_a_422(param: str, value: Any) -> None:
    with pytest.raises(GatewayError) as exc:
        AnthropicProvider().check({"messages": [user("x")], param: value})
    assert exc.value.status == 422
    assert exc.value.param == param


def test_null_unsupported_parameters_pass() -> None:
    AnthropicProvider().check({"messages": [user("x")], "seed": None, "logprobs": False, "n": 1})


def test_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    p = AnthropicProvider()
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    assert p.credential(None) is None
    stored = Credential("k", "http://x")
    assert p.credential(stored) is stored
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    assert p.credential(None) == Credential("env-key", "https://api.anthropic.com")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy/")
    assert p.credential(None) == Credential("env-key", "http://proxy")


# ---------------------------------------------------------------- response translation


def test_from_anthropic_text_and_tool_use() -> None:
    resp = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 2,
        },
    }
    out = from_anthropic(resp)
    assert out["id"] == "chatcmpl-msg_1"
    assert out["object"] == "chat.completion"
    assert isinstance(out["created"], int)
    assert out["model"] == "claude-sonnet-4-5"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": 5,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


@pytest.mark.parametrize(
    ("stop", "finish"), [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")]
)
def test_finish_reasons(stop: str, finish: str) -> None:
    resp = {"id": "m", "model": "c", "content": [], "stop_reason": stop, "usage": {}}
    out = from_anthropic(resp)
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] is None


def test_stream_translator_tool_without_arguments_gets_empty_object() -> None:
    t = StreamTranslator("m")
    t.feed("", {"type": "message_start", "message": {"id": "x", "model": "m", "usage": {"input_tokens": 3}}})
    block = {"type": "tool_use", "id": "t1", "name": "now", "input": {}}
    first = t.feed("", {"type": "content_block_start", "index": 0, "content_block": block})
    last = t.feed("", {"type": "content_block_stop", "index": 0})
    args = first[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    args += last[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    assert args == "{}"


# ---------------------------------------------------------------- against the fake server


@pytest.fixture
def fake(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    return fake_anthropic  # the session's fake server (conftest.py)


@pytest.fixture
def cred(fake: FakeAnthropic) -> Credential:
    return Credential(KEY, fake.base_url)


async def complete(model: str, cred: Credential, **body: Any) -> dict[str, Any]:
    try:
        return await AnthropicProvider().complete({"messages": [user("hello there world")], **body}, model, cred)
    finally:
        await close_sessions()


async def stream(model: str, cred: Credential, **body: Any) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    try:
        async for chunk in AnthropicProvider().stream({"messages": [user("hello there world")], **body}, model, cred):
            chunks.append(chunk)
    finally:
        await close_sessions()
    return chunks


@pytest.mark.asyncio
async def test_text_answer_with_exact_usage(fake: FakeAnthropic, cred: Credential) -> None:
    messages = [{"role": "system", "content": "Be brief."}, user("hello there world")]
    out = await complete("claude-haiku-4-5", cred, messages=messages, metadata={"k": "v"})
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "You said: hello there world",
        "refusal": None,
    }
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["id"] == "chatcmpl-msg_fake0123"
    assert out["model"] == "claude-haiku-4-5"
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    sent = fake.requests[-1]
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"]["system"] == "Be brief."
    assert "metadata" not in sent["body"]
    assert "stream" not in sent["body"]


@pytest.mark.asyncio
async def test_cached_tokens_count_as_prompt_tokens(cred: Credential) -> None:
    out = await complete("claude-cached", cred)
    assert out["usage"]["prompt_tokens"] == 3 + 7 + 3
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}


@pytest.mark.asyncio
async def test_tool_call_answer(cred: Credential) -> None:
    out = await complete("claude-tool", cred, tools=[WEATHER_TOOL], tool_choice="required")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.asyncio
async def test_streamed_text_reassembles_and_ends_with_usage(fake: FakeAnthropic, cred: Credential) -> None:
    chunks = await stream("claude-haiku-4-5", cred)
    assert fake.requests[-1]["body"]["stream"] is True
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-msg_fake0123" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "You said: hello there world"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert all("usage" not in c for c in chunks[:-1])


@pytest.mark.asyncio
async def test_streamed_tool_call_arguments_reassemble(cred: Credential) -> None:
    chunks = await stream("claude-tool", cred, tools=[WEATHER_TOOL])
    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["id"] == "toolu_fake01"
    assert deltas[0]["type"] == "function"
    assert deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert len(deltas) > 2  # arguments arrive in fragments
    assert {d["index"] for d in deltas} == {0}
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 2


@pytest.mark.asyncio
async def test_rate_limit_is_a_429(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("claude-error-429", cred)
    assert exc.value.status == 429
    with pytest.raises(GatewayError) as exc:
        await stream("claude-error-429", cred)
    assert exc.value.status == 429


@pytest.mark.asyncio
async def test_bad_request_is_a_400(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("claude-error-400", cred)
    assert exc.value.status == 400


@pytest.mark.asyncio
async def test_server_error_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("claude-error-500", cred)
    assert exc.value.status == 502


@pytest.mark.asyncio
async def test_auth_error_does_not_leak_the_key(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("claude-auth", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_auth_error"
    assert KEY not in exc.value.message
    assert KEY not in exc.value.body().decode()


@pytest.mark.asyncio
async def test_missing_key_is_refused(fake: FakeAnthropic) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("claude-haiku-4-5", Credential(None, fake.base_url))
    assert exc.value.code == "upstream_auth_error"


@pytest.mark.asyncio
async def test_garbage_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("claude-garbage", cred)
    assert exc.value.status == 502


@pytest.mark.asyncio
async def test_cut_stream_is_broken(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("claude-cut", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_stream_broken"


@pytest.mark.asyncio
async def test_stream_error_event_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("claude-stream-error", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_error"
    assert "Overloaded" in exc.value.message


@pytest.mark.asyncio
async def test_slow_upstream_times_out(cred: Credential, settings: Any) -> None:
    settings.OPENTRACY_UPSTREAM_TIMEOUT_S = 0.5
    await close_sessions()  # the session's timeout is fixed when it is created
    with pytest.raises(GatewayError) as exc:
        await complete("claude-slow", cred)
    assert exc.value.status == 504
