"""The Cohere provider: pure translation both ways, and real calls to a fake Cohere server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.providers import PROVIDERS
from gateway.providers.base import Credential
from gateway.providers.cohere import CohereProvider, StreamTranslator, from_cohere, to_cohere
from gateway.providers.http import close_sessions
from tests.fakes.cohere_upstream import FakeCohere

KEY = "co-test-SECRET-0123456789"
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK_TOOL: dict[str, Any] = {"type": "function", "function": {"name": "now"}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(call_id: str, city: str) -> dict[str, Any]:
    function = {"name": "get_weather", "arguments": json.dumps({"city": city})}
    return {"id": call_id, "type": "function", "function": function}


# ---------------------------------------------------------------- request translation


def test_messages_keep_their_place() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "assistant", "content": ""},  # empty turns are dropped
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            user("again"),
        ]
    }
    out = to_cohere(body, "command-a-03-2025")
    assert out == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": "Use French."},
            {"role": "user", "content": "again"},
        ],
    }


def test_sampling_fields() -> None:
    body = {
        "messages": [user("hi")],
        "max_completion_tokens": 50,
        "max_tokens": 99,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
        "n": 1,
        "user": "u-42",
        "metadata": {"team": "search"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = to_cohere(body, "command-r")
    assert {k: v for k, v in out.items() if k != "messages"} == {
        "model": "command-r",
        "temperature": 0.3,
        "p": 0.9,
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
        "max_tokens": 50,
        "stop_sequences": ["END"],
        "stream": True,
    }
    out = to_cohere({"messages": [user("x")], "stop": ["a", "b"], "max_tokens": 7}, "m")
    assert (out["stop_sequences"], out["max_tokens"]) == (["a", "b"], 7)


def test_response_format() -> None:
    body: dict[str, Any] = {"messages": [user("x")]}
    assert to_cohere({**body, "response_format": {"type": "json_object"}}, "m")["response_format"] == {
        "type": "json_object"
    }
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    assert to_cohere({**body, "response_format": fmt}, "m")["response_format"] == {
        "type": "json_object",
        "json_schema": schema,
    }
    assert "response_format" not in to_cohere({**body, "response_format": {"type": "text"}}, "m")


def test_tools_tool_calls_and_tool_results() -> None:
    body = {
        "messages": [
            user("Weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": "I will check both.",
                "tool_calls": [call("c1", "Paris"), call("c2", "Rome")],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "21C"}]},
            user("Which is warmer?"),
        ],
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now", "strict": True}}],
    }
    out = to_cohere(body, "m")
    assert out["tools"] == [
        WEATHER_TOOL,
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert out["strict_tools"] is True
    assert "tool_choice" not in out
    assert out["messages"][1] == {
        "role": "assistant",
        "tool_plan": "I will check both.",  # text beside tool calls is Cohere's tool plan
        "tool_calls": [call("c1", "Paris"), call("c2", "Rome")],
    }
    assert out["messages"][2:4] == [
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "21C"},
    ]


def test_invalid_tool_arguments_are_a_400() -> None:
    bad = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(GatewayError) as exc:
        to_cohere({"messages": [user("x"), {"role": "assistant", "tool_calls": [bad]}]}, "m")
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("choice", "expected", "names"),
    [
        ("auto", None, ["get_weather", "now"]),
        ("required", "REQUIRED", ["get_weather", "now"]),
        ("none", "NONE", ["get_weather", "now"]),
        ({"type": "function", "function": {"name": "now"}}, "REQUIRED", ["now"]),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: str | None, names: list[str]) -> None:
    body = {"messages": [user("x")], "tools": [WEATHER_TOOL, CLOCK_TOOL], "tool_choice": choice}
    out = to_cohere(body, "m")
    assert out.get("tool_choice") == expected
    assert [t["function"]["name"] for t in out["tools"]] == names
    with pytest.raises(GatewayError) as exc:
        to_cohere({**body, "tool_choice": {"type": "function", "function": {"name": "missing"}}}, "m")
    assert exc.value.status == 400


def test_images() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    out = to_cohere({"messages": [{"role": "user", "content": content}]}, "m")
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    with pytest.raises(GatewayError) as exc:
        to_cohere({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "ftp://x"}]}]}, "m")
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("reasoning_effort", "low"),
        ("modalities", ["audio"]),
    ],
)
def test_unsupported_parameters_are_a_422(param: str, value: Any) -> None:
    with pytest.raises(GatewayError) as exc:
        CohereProvider().check({"messages": [user("x")], param: value})
    assert exc.value.status == 422
    assert exc.value.param == param


def test_parallel_tool_calls_false_is_a_422_only_with_tools() -> None:
    p = CohereProvider()
    p.check({"messages": [user("x")], "parallel_tool_calls": False, "n": 1, "logprobs": False})
    with pytest.raises(GatewayError) as exc:
        p.check({"messages": [user("x")], "tools": [WEATHER_TOOL], "parallel_tool_calls": False})
    assert exc.value.status == 422


def test_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    p = CohereProvider()
    for var in ("COHERE_API_KEY", "COHERE_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert p.credential(None) is None
    stored = Credential("k", "http://x")
    assert p.credential(stored) is stored
    monkeypatch.setenv("COHERE_API_KEY", "env-key")
    assert p.credential(None) == Credential("env-key", "https://api.cohere.com")
    monkeypatch.setenv("COHERE_BASE_URL", "http://proxy/")
    assert p.credential(None) == Credential("env-key", "http://proxy")
    assert PROVIDERS["cohere"].model_prefixes == ("command",)


# ---------------------------------------------------------------- response translation


def test_from_cohere_tool_calls_with_plan() -> None:
    resp: dict[str, Any] = {
        "id": "r1",
        "finish_reason": "TOOL_CALL",
        "message": {
            "role": "assistant",
            "tool_plan": "I will check.",
            "tool_calls": [
                {
                    "id": "get_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        "usage": {
            "billed_units": {"input_tokens": 10, "output_tokens": 5},
            "tokens": {"input_tokens": 60, "output_tokens": 6},
            "cached_tokens": 4,
        },
    }
    out = from_cohere(resp, "command-a-03-2025")
    assert out["id"] == "chatcmpl-r1"
    assert out["object"] == "chat.completion"
    assert out["model"] == "command-a-03-2025"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I will check."
    assert choice["message"]["tool_calls"] == resp["message"]["tool_calls"]
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_from_cohere_text_skips_thinking_and_falls_back_to_raw_tokens() -> None:
    resp = {
        "id": "r2",
        "finish_reason": "COMPLETE",
        "message": {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Hi."}],
        },
        "usage": {"tokens": {"input_tokens": 8, "output_tokens": 2}},
    }
    out = from_cohere(resp, "m")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hi.", "refusal": None}
    assert out["usage"]["prompt_tokens"] == 8
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("COMPLETE", "stop"),
        ("STOP_SEQUENCE", "stop"),
        ("MAX_TOKENS", "length"),
        ("TOOL_CALL", "tool_calls"),
        ("CONTENT_BLOCKED", "content_filter"),
        ("complete", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    out = from_cohere({"id": "x", "finish_reason": reason, "message": {"content": []}}, "m")
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] is None


def test_error_finish_is_a_502() -> None:
    with pytest.raises(GatewayError) as exc:
        from_cohere({"id": "x", "finish_reason": "ERROR", "message": {"content": []}}, "m")
    assert exc.value.status == 502


def test_stream_translator_tool_without_arguments_gets_empty_object() -> None:
    t = StreamTranslator("m")
    t.feed("", {"type": "message-start", "id": "x"})
    head = {"id": "now_1", "type": "function", "function": {"name": "now", "arguments": ""}}
    first = t.feed("", {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": head}}})
    last = t.feed("", {"type": "tool-call-end", "index": 0})
    args = first[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    args += last[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    assert args == "{}"


# ---------------------------------------------------------------- against the fake server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCohere]:
    server = FakeCohere()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cred(fake: FakeCohere) -> Credential:
    return Credential(KEY, fake.base_url)


async def complete(model: str, cred: Credential, **body: Any) -> dict[str, Any]:
    try:
        return await CohereProvider().complete({"messages": [user("hello there world")], **body}, model, cred)
    finally:
        await close_sessions()


async def stream(model: str, cred: Credential, **body: Any) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    try:
        async for chunk in CohereProvider().stream({"messages": [user("hello there world")], **body}, model, cred):
            chunks.append(chunk)
    finally:
        await close_sessions()
    return chunks


def tool_deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]


@pytest.mark.asyncio
async def test_text_answer_with_exact_usage(fake: FakeCohere, cred: Credential) -> None:
    messages = [{"role": "system", "content": "Be brief."}, user("hello there world")]
    out = await complete(
        "command-a-03-2025", cred, messages=messages, metadata={"k": "v"}, user="u1", top_p=0.5, n=1, stop=["X"]
    )
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "You said: hello there world",
        "refusal": None,
    }
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["id"] == "chatcmpl-fake-cohere-0123"
    assert out["model"] == "command-a-03-2025"
    assert out["usage"] == {
        "prompt_tokens": 5,  # billed units, not the raw count with Cohere's template
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    sent = fake.requests[-1]
    assert sent["path"] == "/v2/chat"
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"] == {
        "model": "command-a-03-2025",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there world"}],
        "p": 0.5,
        "stop_sequences": ["X"],
    }


@pytest.mark.asyncio
async def test_base_url_with_version_suffix(fake: FakeCohere) -> None:
    out = await complete("command-r", Credential(KEY, f"{fake.base_url}/v2/"))
    assert out["choices"][0]["message"]["content"] == "You said: hello there world"


@pytest.mark.asyncio
async def test_cached_tokens(cred: Credential) -> None:
    out = await complete("command-cached", cred)
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}
    chunks = await stream("command-cached", cred)
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}


@pytest.mark.asyncio
async def test_thinking_is_not_content(cred: Credential) -> None:
    out = await complete("command-thinking", cred)
    assert out["choices"][0]["message"]["content"] == "You said: hello there world"
    chunks = await stream("command-thinking", cred)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "You said: hello there world"


@pytest.mark.asyncio
async def test_tool_call_answer(fake: FakeCohere, cred: Credential) -> None:
    out = await complete("command-tool", cred, tools=[WEATHER_TOOL], tool_choice="required")
    assert fake.requests[-1]["body"]["tool_choice"] == "REQUIRED"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I will call get_weather."
    tool_call = choice["message"]["tool_calls"][0]
    assert tool_call["id"] == "get_weather_fake0"
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.asyncio
async def test_tool_results_round_trip(fake: FakeCohere, cred: Credential) -> None:
    first = await complete("command-tools2", cred, tools=[WEATHER_TOOL])
    calls = first["choices"][0]["message"]["tool_calls"]
    messages = [
        user("Weather in Paris and Rome?"),
        first["choices"][0]["message"],
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "21C"},
    ]
    out = await complete("command-tools2", cred, messages=messages, tools=[WEATHER_TOOL])
    assert out["choices"][0]["message"]["content"] == "get_weather_fake0 returned 18C get_weather_fake1 returned 21C"
    sent = fake.requests[-1]["body"]["messages"][1]
    assert sent["tool_plan"] == "I will call get_weather."
    assert [c["id"] for c in sent["tool_calls"]] == ["get_weather_fake0", "get_weather_fake1"]
    assert "content" not in sent


@pytest.mark.asyncio
async def test_images_reach_the_upstream(fake: FakeCohere, cred: Credential) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "low"}},
    ]
    out = await complete("command-a-vision", cred, messages=[{"role": "user", "content": content}])
    assert out["choices"][0]["message"]["content"] == "You said: What is this?"
    assert fake.requests[-1]["body"]["messages"][0]["content"][1:] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "low"}},
    ]


@pytest.mark.asyncio
async def test_streamed_text_reassembles_and_ends_with_usage(fake: FakeCohere, cred: Credential) -> None:
    chunks = await stream("command-r", cred)
    assert fake.requests[-1]["body"]["stream"] is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-fake-cohere-0123" for c in chunks)
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
    chunks = await stream("command-tools2", cred, tools=[WEATHER_TOOL])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "I will call get_weather."  # the tool plan
    deltas = tool_deltas(chunks)
    heads = [d for d in deltas if "id" in d]
    assert [(h["index"], h["id"], h["type"]) for h in heads] == [
        (0, "get_weather_fake0", "function"),
        (1, "get_weather_fake1", "function"),
    ]
    assert all(h["function"] == {"name": "get_weather", "arguments": ""} for h in heads)
    assert len(deltas) > 6  # arguments arrive in fragments
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in deltas if "id" not in d)
    for index, city in ((0, "Paris"), (1, "Rome")):
        arguments = "".join(d["function"]["arguments"] for d in deltas if d["index"] == index)
        assert json.loads(arguments) == {"city": city}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 4 + 4


@pytest.mark.asyncio
async def test_max_tokens_is_length(cred: Credential) -> None:
    assert (await complete("command-max", cred))["choices"][0]["finish_reason"] == "length"
    assert (await stream("command-max", cred))[-2]["choices"][0]["finish_reason"] == "length"


@pytest.mark.asyncio
async def test_rate_limit_is_a_429(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("command-error-429", cred)
    assert exc.value.status == 429
    assert exc.value.retryable
    with pytest.raises(GatewayError) as exc:
        await stream("command-error-429", cred)
    assert exc.value.status == 429


@pytest.mark.asyncio
async def test_bad_request_is_a_400(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("command-error-400", cred)
    assert exc.value.status == 400
    assert "Fake error 400" in exc.value.message


@pytest.mark.asyncio
async def test_server_error_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("command-error-500", cred)
    assert exc.value.status == 502
    assert exc.value.retryable


@pytest.mark.asyncio
async def test_auth_error_does_not_leak_the_key(cred: Credential) -> None:
    for call_it in (complete, stream):
        with pytest.raises(GatewayError) as exc:
            await call_it("command-auth", cred)
        assert exc.value.status == 502
        assert exc.value.code == "upstream_auth_error"
        assert KEY not in exc.value.message
        assert KEY not in exc.value.body().decode()


@pytest.mark.asyncio
async def test_missing_key_is_refused(fake: FakeCohere) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("command-r", Credential(None, fake.base_url))
    assert exc.value.code == "upstream_auth_error"


@pytest.mark.asyncio
async def test_garbage_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("command-garbage", cred)
    assert exc.value.status == 502


@pytest.mark.asyncio
async def test_cut_stream_is_broken(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("command-cut", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_stream_broken"


@pytest.mark.asyncio
async def test_stream_error_is_broken(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("command-stream-error", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_stream_broken"
    assert "internal server error" in exc.value.message


@pytest.mark.asyncio
async def test_slow_upstream_times_out(cred: Credential, settings: Any) -> None:
    settings.OPENTRACY_UPSTREAM_TIMEOUT_S = 0.5
    await close_sessions()  # the session's timeout is fixed when it is created
    with pytest.raises(GatewayError) as exc:
        await complete("command-slow", cred)
    assert exc.value.status == 504


# ---------------------------------------------------------------- through the engine's /v1


@pytest.mark.django_db(transaction=True)
def test_through_the_engine(server_url: str, api_key: str, people: dict[str, Any], fake: FakeCohere) -> None:
    """The official SDK against /v1, the engine calling the fake Cohere: answers and stream chunks
    match OpenAI's published schema."""
    import httpx
    import openai

    from gateway.services import credential_set
    from tests.openapi import assert_valid

    credential_set(project=people["project"], provider="cohere", api_key=KEY, base_url=fake.base_url)
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0, timeout=20)
    out = client.chat.completions.create(
        model="command-a-03-2025", messages=[{"role": "user", "content": "hello there world"}]
    )
    assert out.choices[0].message.content == "You said: hello there world"
    assert out.usage is not None and out.usage.prompt_tokens == 3
    assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"

    body = {
        "model": "cohere/command-tools2",
        "messages": [user("Weather in Paris and Rome?")],
        "tools": [WEATHER_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    http = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20)
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    events = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(event))
    resp = http.post("/v1/chat/completions", json={**body, "stream": False})
    assert_valid("CreateChatCompletionResponse", resp.json())
    assert len(resp.json()["choices"][0]["message"]["tool_calls"]) == 2
    resp = http.post("/v1/chat/completions", json={**body, "stream": False, "n": 2})
    assert resp.status_code == 422
    assert_valid("ErrorResponse", resp.json())
