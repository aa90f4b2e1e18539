"""The Gemini provider: pure translation both ways, and real calls to a fake Gemini server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.providers import PROVIDERS
from gateway.providers.base import Credential
from gateway.providers.gemini import SKIP_SIGNATURE, GeminiProvider, StreamTranslator, from_gemini, to_gemini
from gateway.providers.http import close_sessions
from tests.fakes.gemini_upstream import SIGNATURE, FakeGemini

KEY = "AIza-test-SECRET-0123456789"
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


def call(call_id: str, city: str, **extra: Any) -> dict[str, Any]:
    function = {"name": "get_weather", "arguments": json.dumps({"city": city})}
    return {"id": call_id, "type": "function", "function": function, **extra}


# ---------------------------------------------------------------- request translation


def test_system_developer_and_turns() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            user("hi"),
            {"role": "assistant", "content": "Salut."},
            {"role": "assistant", "content": ""},  # empty turns are dropped
            user("again"),
        ]
    }
    out = to_gemini(body)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "Salut."}]},
        {"role": "user", "parts": [{"text": "again"}]},
    ]
    assert "model" not in out  # the model goes in the URL
    assert "generationConfig" not in out


def test_generation_config() -> None:
    body = {
        "messages": [user("hi")],
        "max_completion_tokens": 50,
        "max_tokens": 99,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,
        "n": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "user": "u-42",
        "metadata": {"team": "search"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = to_gemini(body)
    assert set(out) == {"contents", "generationConfig"}
    assert out["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "candidateCount": 2,
    }
    config = to_gemini({"messages": [user("x")], "stop": ["a", "b"], "max_tokens": 7, "n": 1})["generationConfig"]
    assert config == {"maxOutputTokens": 7, "stopSequences": ["a", "b"]}
    assert to_gemini({"messages": [user("x")], "reasoning_effort": "low"})["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 1024}
    }


def test_response_format() -> None:
    body: dict[str, Any] = {"messages": [user("x")]}
    out = to_gemini({**body, "response_format": {"type": "json_object"}})
    assert out["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    out = to_gemini({**body, "response_format": fmt})
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert "generationConfig" not in to_gemini({**body, "response_format": {"type": "text"}})


def test_tools_tool_calls_and_tool_results() -> None:
    body = {
        "messages": [
            user("Weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    call("c1", "Paris", extra_content={"google": {"thought_signature": "sig-1"}}),
                    call("c2", "Rome"),
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": "18C"}'},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "21C"}]},
            user("Which is warmer?"),
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
    }
    out = to_gemini(body)
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                }
            ]
        }
    ]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    assert out["contents"][1]["parts"] == [
        {"text": "Checking."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig-1"},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]
    # Both answers in the turn after the calls, named after the call's function; a JSON object is
    # the response itself, anything else becomes its `output`.
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": "18C"}}},
        {"functionResponse": {"name": "get_weather", "response": {"output": "21C"}}},
        {"text": "Which is warmer?"},
    ]


def test_tool_call_without_signature_gets_the_placeholder_on_the_first_call() -> None:
    body = {"messages": [user("x"), {"role": "assistant", "tool_calls": [call("a", "Paris"), call("b", "Rome")]}]}
    parts = to_gemini(body)["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in parts[1]


def test_tool_result_for_an_unknown_call_is_a_400() -> None:
    body = {"messages": [user("x"), {"role": "tool", "tool_call_id": "nope", "content": "1"}]}
    with pytest.raises(GatewayError) as exc:
        to_gemini(body)
    assert exc.value.status == 400
    bad = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(GatewayError) as exc:
        to_gemini({"messages": [user("x"), {"role": "assistant", "tool_calls": [bad]}]})
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    body = {"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": choice}
    assert to_gemini(body)["toolConfig"] == {"functionCallingConfig": expected}


def test_images() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    ]
    out = to_gemini({"messages": [{"role": "user", "content": content}]})
    assert out["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render"}},
    ]
    with pytest.raises(GatewayError) as exc:
        to_gemini({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "ftp://x"}]}]})
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("modalities", ["text", "audio"]),
        ("functions", [{"name": "f"}]),
    ],
)
def test_unsupported_parameters_are_a_422(param: str, value: Any) -> None:
    with pytest.raises(GatewayError) as exc:
        GeminiProvider().check({"messages": [user("x")], param: value})
    assert exc.value.status == 422
    assert exc.value.param == param


def test_parallel_tool_calls_false_is_a_422_only_with_tools() -> None:
    p = GeminiProvider()
    p.check({"messages": [user("x")], "parallel_tool_calls": False})
    with pytest.raises(GatewayError) as exc:
        p.check({"messages": [user("x")], "tools": [WEATHER_TOOL], "parallel_tool_calls": False})
    assert exc.value.status == 422


def test_harmless_values_pass() -> None:
    GeminiProvider().check({"messages": [user("x")], "logprobs": False, "logit_bias": {}, "modalities": ["text"]})


def test_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    p = GeminiProvider()
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert p.credential(None) is None
    stored = Credential("k", "http://x")
    assert p.credential(stored) is stored
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    assert p.credential(None) == Credential("google-key", "https://generativelanguage.googleapis.com")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    monkeypatch.setenv("GEMINI_BASE_URL", "http://proxy/")
    assert p.credential(None) == Credential("gemini-key", "http://proxy")
    assert PROVIDERS["gemini"].model_prefixes == ("gemini-",)


# ---------------------------------------------------------------- response translation


def test_from_gemini_text_and_function_call() -> None:
    resp = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Let me check."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "s1"},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 18,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }
    out = from_gemini(resp, "gemini-2.5-flash")
    assert out["id"] == "chatcmpl-r1"
    assert out["object"] == "chat.completion"
    assert out["model"] == "gemini-2.5-flash"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # Gemini says STOP after a function call
    assert choice["message"]["content"] == "Let me check."
    tool_call = choice["message"]["tool_calls"][0]
    assert tool_call["id"].startswith("call_")
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
    assert tool_call["extra_content"] == {"google": {"thought_signature": "s1"}}
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 8,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter")],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    resp = {"candidates": [{"content": {"parts": []}, "finishReason": reason}], "usageMetadata": {}}
    out = from_gemini(resp, "m")
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] is None


def test_blocked_prompt_is_a_content_filter() -> None:
    out = from_gemini({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}, "m")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": None},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    with pytest.raises(GatewayError) as exc:
        from_gemini({"usageMetadata": {}}, "m")
    assert exc.value.status == 502


def test_stream_translator_needs_every_candidate_finished() -> None:
    t = StreamTranslator("m", n=2)
    t.feed({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0, "finishReason": "STOP"}]})
    assert not t.done
    with pytest.raises(GatewayError) as exc:
        t.finish()
    assert exc.value.code == "upstream_stream_broken"
    t.feed({"candidates": [{"content": {"parts": [{"text": "b"}]}, "index": 1, "finishReason": "STOP"}]})
    assert t.done
    assert t.finish()["choices"] == []


# ---------------------------------------------------------------- against the fake server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cred(fake: FakeGemini) -> Credential:
    return Credential(KEY, fake.base_url)


async def complete(model: str, cred: Credential, **body: Any) -> dict[str, Any]:
    try:
        return await GeminiProvider().complete({"messages": [user("hello there world")], **body}, model, cred)
    finally:
        await close_sessions()


async def stream(model: str, cred: Credential, **body: Any) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    try:
        async for chunk in GeminiProvider().stream({"messages": [user("hello there world")], **body}, model, cred):
            chunks.append(chunk)
    finally:
        await close_sessions()
    return chunks


def tool_deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]


@pytest.mark.asyncio
async def test_text_answer_with_exact_usage(fake: FakeGemini, cred: Credential) -> None:
    messages = [{"role": "system", "content": "Be brief."}, user("hello there world")]
    out = await complete("gemini-2.5-flash", cred, messages=messages, metadata={"k": "v"}, user="u1", temperature=0.2)
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "You said: hello there world",
        "refusal": None,
    }
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["id"] == "chatcmpl-fakeResp0123"
    assert out["model"] == "gemini-2.5-flash"
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["query"] == {}  # the key is never in the URL
    assert sent["headers"]["x-goog-api-key"] == KEY
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["body"]["generationConfig"] == {"temperature": 0.2}


@pytest.mark.asyncio
async def test_base_url_with_version_suffix(fake: FakeGemini) -> None:
    out = await complete("gemini-2.5-flash", Credential(KEY, f"{fake.base_url}/v1beta/"))
    assert out["choices"][0]["message"]["content"] == "You said: hello there world"


@pytest.mark.asyncio
async def test_several_candidates(fake: FakeGemini, cred: Credential) -> None:
    out = await complete("gemini-2.5-flash", cred, n=2)
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert fake.requests[-1]["body"]["generationConfig"] == {"candidateCount": 2}
    chunks = await stream("gemini-2.5-flash", cred, n=2)
    for index in (0, 1):
        text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == index
        )
        assert text == "You said: hello there world"
    assert chunks[-1]["usage"]["completion_tokens"] == 10


@pytest.mark.asyncio
async def test_cached_and_thinking_tokens(cred: Credential) -> None:
    out = await complete("gemini-cached-thinking", cred)
    assert out["choices"][0]["message"]["content"] == "You said: hello there world"  # no thought text
    assert out["usage"]["prompt_tokens"] == 3 + 7
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}
    assert out["usage"]["completion_tokens"] == 5 + 4


@pytest.mark.asyncio
async def test_tool_call_answer(fake: FakeGemini, cred: Credential) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    out = await complete("gemini-tool", cred, tools=[WEATHER_TOOL], tool_choice=choice)
    sent = fake.requests[-1]["body"]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    result = out["choices"][0]
    assert result["finish_reason"] == "tool_calls"
    assert result["message"]["content"] is None
    tool_call = result["message"]["tool_calls"][0]
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
    assert tool_call["extra_content"] == {"google": {"thought_signature": SIGNATURE}}


@pytest.mark.asyncio
async def test_tool_results_round_trip(fake: FakeGemini, cred: Credential) -> None:
    first = await complete("gemini-tools2", cred, tools=[WEATHER_TOOL])
    calls = first["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    messages = [
        user("Weather in Paris and Rome?"),
        first["choices"][0]["message"],
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": '{"temp": 21}'},
    ]
    out = await complete("gemini-tools2", cred, messages=messages, tools=[WEATHER_TOOL])
    assert out["choices"][0]["message"]["content"] == (
        'get_weather returned {"output": "18C"} get_weather returned {"temp": 21}'
    )
    sent = fake.requests[-1]["body"]["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"] == SIGNATURE  # handed back as Gemini gave it


@pytest.mark.asyncio
async def test_images_reach_the_upstream(fake: FakeGemini, cred: Credential) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
    ]
    out = await complete("gemini-2.5-flash", cred, messages=[{"role": "user", "content": content}])
    assert out["choices"][0]["message"]["content"] == "You said: What is this?"
    assert fake.requests[-1]["body"]["contents"][0]["parts"][1:] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
    ]


@pytest.mark.asyncio
async def test_streamed_text_reassembles_and_ends_with_usage(fake: FakeGemini, cred: Credential) -> None:
    chunks = await stream("gemini-2.5-flash", cred)
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent["query"] == {"alt": "sse"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-fakeResp0123" for c in chunks)
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
async def test_streamed_tool_calls_across_events(cred: Credential) -> None:
    chunks = await stream("gemini-tools2", cred, tools=[WEATHER_TOOL])
    deltas = tool_deltas(chunks)
    # Per call: a head with id, type and name, then the arguments.
    assert [sorted(d) for d in deltas] == [
        ["extra_content", "function", "id", "index", "type"],
        ["function", "index"],
        ["function", "id", "index", "type"],
        ["function", "index"],
    ]
    assert deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert deltas[0]["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert [d["index"] for d in deltas] == [0, 0, 1, 1]
    assert deltas[0]["id"] != deltas[2]["id"]
    assert json.loads(deltas[1]["function"]["arguments"]) == {"city": "Paris"}
    assert json.loads(deltas[3]["function"]["arguments"]) == {"city": "Rome"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.asyncio
async def test_blocked_prompt_streams_a_content_filter(cred: Credential) -> None:
    chunks = await stream("gemini-blocked", cred)
    assert chunks[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert chunks[-1]["usage"]["prompt_tokens"] == 3
    out = await complete("gemini-blocked", cred)
    assert out["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.asyncio
async def test_max_tokens_is_length(cred: Credential) -> None:
    assert (await complete("gemini-max", cred))["choices"][0]["finish_reason"] == "length"
    chunks = await stream("gemini-max", cred)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


@pytest.mark.asyncio
async def test_rate_limit_is_a_429(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("gemini-error-429", cred)
    assert exc.value.status == 429
    assert exc.value.retryable
    with pytest.raises(GatewayError) as exc:
        await stream("gemini-error-429", cred)
    assert exc.value.status == 429


@pytest.mark.asyncio
async def test_bad_request_is_a_400(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("gemini-error-400", cred)
    assert exc.value.status == 400
    assert "Fake error 400" in exc.value.message


@pytest.mark.asyncio
async def test_server_error_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("gemini-error-500", cred)
    assert exc.value.status == 502
    assert exc.value.retryable


@pytest.mark.parametrize("model", ["gemini-auth", "gemini-badkey"])
@pytest.mark.asyncio
async def test_auth_errors_do_not_leak_the_key(cred: Credential, model: str) -> None:
    for call_it in (complete, stream):
        with pytest.raises(GatewayError) as exc:
            await call_it(model, cred)
        assert exc.value.status == 502
        assert exc.value.code == "upstream_auth_error"
        assert KEY not in exc.value.message
        assert KEY not in exc.value.body().decode()


@pytest.mark.asyncio
async def test_missing_key_is_refused(fake: FakeGemini) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("gemini-2.5-flash", Credential(None, fake.base_url))
    assert exc.value.code == "upstream_auth_error"


@pytest.mark.asyncio
async def test_garbage_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("gemini-garbage", cred)
    assert exc.value.status == 502


@pytest.mark.asyncio
async def test_cut_stream_is_broken(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("gemini-cut", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_stream_broken"


@pytest.mark.asyncio
async def test_stream_error_event_is_broken(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("gemini-stream-error", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_stream_broken"
    assert "overloaded" in exc.value.message


@pytest.mark.asyncio
async def test_slow_upstream_times_out(cred: Credential, settings: Any) -> None:
    settings.OPENTRACY_UPSTREAM_TIMEOUT_S = 0.5
    await close_sessions()  # the session's timeout is fixed when it is created
    with pytest.raises(GatewayError) as exc:
        await complete("gemini-slow", cred)
    assert exc.value.status == 504


# ---------------------------------------------------------------- through the engine's /v1


@pytest.mark.django_db(transaction=True)
def test_through_the_engine(server_url: str, api_key: str, people: dict[str, Any], fake: FakeGemini) -> None:
    """The official SDK against /v1, the engine calling the fake Gemini: answers and stream chunks
    match OpenAI's published schema."""
    import httpx
    import openai

    from gateway.services import credential_set
    from tests.openapi import assert_valid

    credential_set(project=people["project"], provider="gemini", api_key=KEY, base_url=fake.base_url)
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0, timeout=20)
    out = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello there world"}]
    )
    assert out.choices[0].message.content == "You said: hello there world"
    assert out.usage is not None and out.usage.prompt_tokens == 3
    assert fake.requests[-1]["headers"]["x-goog-api-key"] == KEY

    body = {
        "model": "gemini/gemini-tools2",
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
    resp = http.post("/v1/chat/completions", json={**body, "stream": False, "logprobs": True})
    assert resp.status_code == 422
    assert_valid("ErrorResponse", resp.json())
