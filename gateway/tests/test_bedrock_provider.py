"""The Bedrock provider: pure translation both ways, and real signed calls to a fake Bedrock runtime
that verifies SigV4 and answers ConverseStream with binary AWS event-stream frames."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from yarl import URL

from gateway.errors import GatewayError
from gateway.providers import PROVIDERS
from gateway.providers.base import Credential
from gateway.providers.bedrock import BedrockProvider, error_from_response, region_of, sign
from gateway.providers.converse import StreamTranslator, from_converse, to_converse
from gateway.providers.http import close_sessions, session
from tests.fakes.bedrock_upstream import ACCESS_KEY_ID, REQUEST_ID, SECRET_KEY, FakeBedrock, event, exception

MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKE-session-token-SECRET-9876"
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


def test_system_developer_and_inference_config() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            user("hi"),
        ],
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
    out = to_converse(body)
    assert out == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "system": [{"text": "Be brief."}, {"text": "Use French."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"]},
    }
    plain = to_converse({"messages": [user("x")], "stop": ["a", "b"], "max_tokens": 7})
    assert plain["inferenceConfig"] == {"maxTokens": 7, "stopSequences": ["a", "b"]}
    assert to_converse({"messages": [user("x")]}) == {"messages": [{"role": "user", "content": [{"text": "x"}]}]}


def test_tools_tool_calls_and_tool_results() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
    ]
    body = {
        "messages": [
            user("Weather in Paris and Rome?"),
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": '{"temp": 21}'}]},
            user("Which is warmer?"),
        ],
        "tools": [WEATHER_TOOL],
    }
    out = to_converse(body)
    assert out["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
                }
            }
        ]
    }
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {"city": "Paris"}}},
        {"toolUse": {"toolUseId": "c2", "name": "get_weather", "input": {"city": "Rome"}}},
    ]
    # Both tool messages and the next user message merge into one user turn, results first; a JSON
    # object result travels as `json`, anything else as text.
    assert out["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "18C"}]}},
        {"toolResult": {"toolUseId": "c2", "content": [{"json": {"temp": 21}}]}},
        {"text": "Which is warmer?"},
    ]


def test_consecutive_same_role_messages_merge() -> None:
    messages = [user("a"), {"role": "assistant", "content": ""}, user("b"), {"role": "assistant", "content": "c"}]
    assert to_converse({"messages": messages})["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}]},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    out = to_converse({"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": choice})
    assert out["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_leaves_the_tools_out_and_bad_choices_are_400() -> None:
    assert "toolConfig" not in to_converse({"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": "none"})
    with pytest.raises(GatewayError) as exc:
        to_converse({"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": {"type": "function"}})
    assert exc.value.status == 400
    bad = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(GatewayError) as exc:
        to_converse({"messages": [user("x"), {"role": "assistant", "tool_calls": [bad]}]})
    assert exc.value.status == 400


def test_images() -> None:
    content = [
        {"type": "text", "text": "What are these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "s3://my-bucket/cats/tabby.webp"}},
    ]
    out = to_converse({"messages": [{"role": "user", "content": content}]})
    assert out["messages"][0]["content"] == [
        {"text": "What are these?"},
        {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
        {"image": {"format": "webp", "source": {"s3Location": {"uri": "s3://my-bucket/cats/tabby.webp"}}}},
    ]


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.jpg", "http://example.com/cat.png", "data:image/bmp;base64,Qk0=", "s3://b/noext"]
)
def test_images_bedrock_cannot_take_are_a_422(url: str) -> None:
    with pytest.raises(GatewayError) as exc:
        to_converse({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert exc.value.status == 422
    assert exc.value.code == "unsupported_parameter"
    if url.startswith("http"):
        assert "base64" in exc.value.message and "s3://" in exc.value.message


def test_response_format_becomes_a_system_instruction() -> None:
    body: dict[str, Any] = {"messages": [{"role": "system", "content": "Be brief."}, user("x")]}
    out = to_converse({**body, "response_format": {"type": "json_object"}})
    assert out["system"][0] == {"text": "Be brief."}
    assert "JSON object only" in out["system"][1]["text"]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    out = to_converse({"messages": [user("x")], "response_format": fmt})
    assert json.dumps(schema, separators=(",", ":")) in out["system"][0]["text"]
    assert "system" not in to_converse({"messages": [user("x")], "response_format": {"type": "text"}})


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
        BedrockProvider().check({"messages": [user("x")], param: value})
    assert exc.value.status == 422
    assert exc.value.param == param


def test_null_unsupported_parameters_pass() -> None:
    BedrockProvider().check({"messages": [user("x")], "seed": None, "logprobs": False, "n": 1})


# ---------------------------------------------------------------- credentials and registry


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "BEDROCK_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_credential_from_the_environment(no_aws_env: pytest.MonkeyPatch) -> None:
    p = BedrockProvider()
    assert p.credential(None) is None
    no_aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    assert p.credential(None) is None  # no secret
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    no_aws_env.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    cred = p.credential(None)
    assert cred is not None
    assert cred.api_key == "env-secret"
    assert cred.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert dict(cred.options) == {"access_key_id": "AKIAENV", "region": "eu-west-3"}
    no_aws_env.setenv("AWS_REGION", "us-west-2")
    no_aws_env.setenv("AWS_SESSION_TOKEN", "tok-SECRET")
    no_aws_env.setenv("BEDROCK_BASE_URL", "http://proxy:9000/")
    cred = p.credential(None)
    assert cred is not None
    assert cred.base_url == "http://proxy:9000"
    assert cred.option("region") == "us-west-2"
    assert cred.secrets() == ("env-secret", "tok-SECRET")


def test_stored_credential(no_aws_env: pytest.MonkeyPatch) -> None:
    p = BedrockProvider()
    stored = Credential("s", "http://vpce", {"access_key_id": "AKIA", "region": "ap-south-1"}, "eu", 3)
    assert p.credential(stored) is stored
    filled = p.credential(Credential("s", "", {"access_key_id": "AKIA", "region": "eu-central-1"}, "eu", 3))
    assert filled is not None
    assert filled.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert (filled.label, filled.weight, filled.option("access_key_id")) == ("eu", 3, "AKIA")
    default = p.credential(Credential("s", "", {"access_key_id": "AKIA"}))
    assert default is not None
    assert default.base_url == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert region_of(Credential("s", "https://vpce-1.bedrock-runtime.ca-central-1.vpce.amazonaws.com")) == (
        "ca-central-1"
    )


def test_registered_with_prefixes() -> None:
    p = PROVIDERS["bedrock"]
    assert isinstance(p, BedrockProvider)
    assert MODEL in p.known_models
    for model in (MODEL, "amazon.nova-pro-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1:0"):
        assert model.startswith(p.model_prefixes)
    assert "AWS_SECRET_ACCESS_KEY" in p.env_hint


# ---------------------------------------------------------------- response translation


def test_from_converse_text_and_tool_use() -> None:
    resp = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
                    {"text": "Let me check."},
                    {"toolUse": {"toolUseId": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 5,
            "totalTokens": 15,
            "cacheReadInputTokens": 4,
            "cacheWriteInputTokens": 2,
        },
    }
    out = from_converse(resp, MODEL, "req-1")
    assert out["id"] == "chatcmpl-req-1"
    assert out["object"] == "chat.completion"
    assert out["model"] == MODEL
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    call = choice["message"]["tool_calls"][0]
    assert (call["id"], call["type"], call["function"]["name"]) == ("tu_1", "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": 5,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ],
)
def test_finish_reasons(stop: str, finish: str) -> None:
    resp = {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": stop, "usage": {}}
    out = from_converse(resp, "m")
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] is None
    assert out["id"].startswith("chatcmpl-")


def test_response_without_a_message_is_a_502() -> None:
    with pytest.raises(GatewayError) as exc:
        from_converse({"output": {}}, "m")
    assert exc.value.status == 502


def test_stream_translator_order_tools_and_usage() -> None:
    t = StreamTranslator("m", "rid")
    assert t.feed("messageStart", {"role": "assistant"})[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
    }
    start = {"toolUse": {"toolUseId": "t", "name": "now"}}
    first = t.feed("contentBlockStart", {"contentBlockIndex": 1, "start": start})
    last = t.feed("contentBlockStop", {"contentBlockIndex": 1})
    args = first[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    args += last[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    assert args == "{}"  # a tool called without arguments still gets valid JSON
    # Metadata may come first: the usage chunk still comes last, once both arrived.
    assert t.feed("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1}}) == []
    assert not t.done
    chunks = t.feed("messageStop", {"stopReason": "tool_use"})
    assert chunks[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[1]["choices"] == [] and chunks[1]["usage"]["total_tokens"] == 4
    assert t.done and all(c["id"] == "chatcmpl-rid" for c in chunks)


def test_error_bodies_map_like_other_providers() -> None:
    def err(status: int, kind: str, message: str) -> GatewayError:
        raw = json.dumps({"message": message}).encode()
        return error_from_response(status, raw, {"x-amzn-ErrorType": f"{kind}:http://x/"}, (SECRET_KEY,))

    throttled = err(429, "ThrottlingException", "Too many requests")
    assert (throttled.status, throttled.code, throttled.retryable) == (429, "ThrottlingException", True)
    assert throttled.message == "bedrock: Too many requests"
    assert err(403, "AccessDeniedException", "no").code == "upstream_auth_error"
    assert err(404, "ResourceNotFoundException", "no such model").status == 404
    assert err(400, "ValidationException", "Input is too long for requested model.").context_length
    server = err(503, "ServiceUnavailableException", "busy")
    assert (server.status, server.retryable, server.upstream_status) == (502, True, 503)
    assert SECRET_KEY not in err(400, "ValidationException", f"bad {SECRET_KEY}").message
    assert "<html>" in error_from_response(500, b"<html>oops</html>", {}, ()).message


def test_fake_event_frames_decode_with_botocore() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(event("messageStop", {"stopReason": "end_turn"}) + exception("throttlingException", "slow down"))
    first, second = list(buffer)
    assert first.headers[":event-type"] == "messageStop"
    assert json.loads(first.payload)["stopReason"] == "end_turn"
    assert second.headers[":message-type"] == "exception"
    assert second.headers[":exception-type"] == "throttlingException"


# ---------------------------------------------------------------- against the fake server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBedrock]:
    server = FakeBedrock()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cred(fake: FakeBedrock) -> Credential:
    return Credential(SECRET_KEY, fake.base_url, {"access_key_id": ACCESS_KEY_ID, "region": "us-east-1"})


async def complete(model: str, cred: Credential, **body: Any) -> dict[str, Any]:
    try:
        return await BedrockProvider().complete({"messages": [user("hello there world")], **body}, model, cred)
    finally:
        await close_sessions()


async def stream(model: str, cred: Credential, **body: Any) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    try:
        async for chunk in BedrockProvider().stream({"messages": [user("hello there world")], **body}, model, cred):
            chunks.append(chunk)
    finally:
        await close_sessions()
    return chunks


@pytest.mark.asyncio
async def test_signed_text_answer_with_exact_usage(fake: FakeBedrock, cred: Credential) -> None:
    messages = [{"role": "system", "content": "Be brief."}, user("hello there world")]
    out = await complete(MODEL, cred, messages=messages, metadata={"k": "v"}, temperature=0.2)
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "You said: hello there world",
        "refusal": None,
    }
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["id"] == f"chatcmpl-{REQUEST_ID}"
    assert out["model"] == MODEL
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    sent = fake.requests[-1]
    # The model id is URL-quoted in the path (':' as %3A) and the signature covered exactly that.
    assert sent["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    assert sent["model"] == MODEL
    assert sent["headers"]["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
    assert "/us-east-1/bedrock/aws4_request" in sent["headers"]["Authorization"]
    assert sent["body"]["system"] == [{"text": "Be brief."}]
    assert sent["body"]["inferenceConfig"] == {"temperature": 0.2}
    assert "metadata" not in sent["body"] and "modelId" not in sent["body"]


@pytest.mark.asyncio
async def test_session_token_is_signed_and_sent(fake: FakeBedrock, cred: Credential) -> None:
    with_token = Credential(cred.api_key, cred.base_url, {**cred.options, "session_token": SESSION_TOKEN})
    out = await complete(MODEL, with_token)
    assert out["choices"][0]["message"]["content"] == "You said: hello there world"
    sent = fake.requests[-1]["headers"]
    assert sent["X-Amz-Security-Token"] == SESSION_TOKEN
    assert "x-amz-security-token" in sent["Authorization"]


@pytest.mark.asyncio
async def test_wrong_secret_is_an_auth_error_without_secrets(cred: Credential) -> None:
    wrong = Credential("not-the-secret-SECRET", cred.base_url, cred.options)
    for call in (complete, stream):
        with pytest.raises(GatewayError) as exc:
            await call(MODEL, wrong)
        assert exc.value.status == 502
        assert exc.value.code == "upstream_auth_error"
        assert exc.value.upstream_status == 403
        assert "not-the-secret-SECRET" not in exc.value.body().decode()
    unknown = Credential(SECRET_KEY, cred.base_url, {"access_key_id": "AKIAUNKNOWN"})
    with pytest.raises(GatewayError) as exc:
        await complete(MODEL, unknown)
    assert exc.value.code == "upstream_auth_error"


@pytest.mark.asyncio
async def test_missing_access_key_id_is_refused_before_sending(fake: FakeBedrock, cred: Credential) -> None:
    sent = len(fake.requests)
    with pytest.raises(GatewayError) as exc:
        await complete(MODEL, Credential(SECRET_KEY, cred.base_url, {"region": "us-east-1"}))
    assert exc.value.code == "provider_not_configured"
    assert len(fake.requests) == sent


@pytest.mark.asyncio
async def test_cached_tokens_count_as_prompt_tokens(cred: Credential) -> None:
    out = await complete("amazon.nova-pro-cached-v1:0", cred)
    assert out["usage"]["prompt_tokens"] == 3 + 7 + 3
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}
    chunks = await stream("amazon.nova-pro-cached-v1:0", cred)
    assert chunks[-1]["usage"] == out["usage"]


@pytest.mark.asyncio
async def test_tool_call_answer_and_result_round_trip(fake: FakeBedrock, cred: Credential) -> None:
    out = await complete("anthropic.claude-tool-v1:0", cred, tools=[WEATHER_TOOL], tool_choice="required")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert fake.requests[-1]["body"]["toolConfig"]["toolChoice"] == {"any": {}}
    # The caller runs the tool and sends the answer back.
    messages = [
        user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 18C"},
    ]
    out = await complete(MODEL, cred, messages=messages, tools=[WEATHER_TOOL])
    assert out["choices"][0]["message"]["content"] == "You said: Sunny, 18C"
    sent = fake.requests[-1]["body"]["messages"]
    assert sent[1]["content"] == [
        {"toolUse": {"toolUseId": "tooluse_fake01", "name": "get_weather", "input": {"city": "Paris"}}}
    ]
    assert sent[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "tooluse_fake01", "content": [{"text": "Sunny, 18C"}]}}],
    }


@pytest.mark.asyncio
async def test_base64_image_is_sent(fake: FakeBedrock, cred: Credential) -> None:
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    out = await complete(MODEL, cred, messages=[{"role": "user", "content": content}])
    assert out["choices"][0]["message"]["content"] == "You said: describe"
    image = fake.requests[-1]["body"]["messages"][0]["content"][1]
    assert image == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}


@pytest.mark.asyncio
async def test_http_image_is_a_422_before_sending(fake: FakeBedrock, cred: Credential) -> None:
    sent = len(fake.requests)
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(GatewayError) as exc:
        await complete(MODEL, cred, messages=[{"role": "user", "content": content}])
    assert exc.value.status == 422
    assert len(fake.requests) == sent


@pytest.mark.asyncio
async def test_streamed_text_reassembles_and_ends_with_usage(fake: FakeBedrock, cred: Credential) -> None:
    chunks = await stream(MODEL, cred)
    assert fake.requests[-1]["path"].endswith("/converse-stream")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == f"chatcmpl-{REQUEST_ID}" for c in chunks)
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
    chunks = await stream("us.anthropic.claude-tool-v1:0", cred, tools=[WEATHER_TOOL])
    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0] == {
        "index": 0,
        "id": "tooluse_fake01",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(deltas) > 2  # arguments arrive in pieces
    assert all(set(d) == {"index", "function"} for d in deltas[1:])
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"city": "Paris"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 2


@pytest.mark.asyncio
async def test_throttling_is_a_429(cred: Credential) -> None:
    for call in (complete, stream):
        with pytest.raises(GatewayError) as exc:
            await call("anthropic.claude-throttle-v1:0", cred)
        assert exc.value.status == 429
        assert exc.value.type == "rate_limit_error"
        assert exc.value.retryable
    with pytest.raises(GatewayError) as exc:
        await stream("anthropic.claude-throttle-stream-v1:0", cred)
    assert (exc.value.status, exc.value.retryable) == (429, True)


@pytest.mark.asyncio
async def test_in_stream_exception_is_a_502(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("anthropic.claude-stream-error-v1:0", cred)
    assert exc.value.status == 502
    assert "modelStreamErrorException" in exc.value.message
    assert "The model stream failed." in exc.value.message


@pytest.mark.asyncio
async def test_http_errors_are_mapped(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await complete("meta.error-400", cred)
    assert (exc.value.status, exc.value.code) == (400, "ValidationException")
    assert exc.value.message == "bedrock: Fake error 400 for meta.error-400."
    with pytest.raises(GatewayError) as exc:
        await stream("meta.error-500", cred)
    assert (exc.value.status, exc.value.retryable, exc.value.upstream_status) == (502, True, 500)
    with pytest.raises(GatewayError) as exc:
        await complete("meta.too-long", cred)
    assert exc.value.context_length


@pytest.mark.asyncio
async def test_secrets_never_reach_error_messages(cred: Credential) -> None:
    with_token = Credential(cred.api_key, cred.base_url, {**cred.options, "session_token": SESSION_TOKEN})
    with pytest.raises(GatewayError) as exc:
        await complete("mistral.echo-auth", with_token)
    body = exc.value.body().decode()
    assert "AWS4-HMAC-SHA256" in body  # the upstream did echo what it received ...
    assert SESSION_TOKEN not in body  # ... but the session token is scrubbed
    assert SECRET_KEY not in body


@pytest.mark.asyncio
async def test_garbage_is_a_502(cred: Credential) -> None:
    for call in (complete, stream):
        with pytest.raises(GatewayError) as exc:
            await call("cohere.garbage", cred)
        assert exc.value.status == 502


@pytest.mark.asyncio
async def test_corrupt_frame_is_a_broken_stream(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("amazon.corrupt", cred)
    assert (exc.value.status, exc.value.code) == (502, "upstream_stream_broken")


@pytest.mark.asyncio
async def test_cut_stream_is_broken(cred: Credential) -> None:
    with pytest.raises(GatewayError) as exc:
        await stream("anthropic.claude-cut-v1:0", cred)
    assert exc.value.status == 502
    assert exc.value.code == "upstream_stream_broken"


@pytest.mark.asyncio
async def test_slow_upstream_times_out(cred: Credential, settings: Any) -> None:
    settings.OPENTRACY_UPSTREAM_TIMEOUT_S = 0.5
    await close_sessions()  # the session's timeout is fixed when it is created
    with pytest.raises(GatewayError) as exc:
        await complete("amazon.slow", cred)
    assert exc.value.status == 504


@pytest.mark.asyncio
async def test_unreachable_upstream_is_a_retryable_502(cred: Credential) -> None:
    closed = Credential(SECRET_KEY, "http://127.0.0.1:9", cred.options)
    with pytest.raises(GatewayError) as exc:
        await complete(MODEL, closed)
    assert (exc.value.status, exc.value.code, exc.value.retryable) == (502, "upstream_unreachable", True)


@pytest.mark.asyncio
async def test_signature_covers_the_body(fake: FakeBedrock, cred: Credential) -> None:
    url = f"{fake.base_url}/model/{MODEL.replace(':', '%3A')}/converse"
    signed = sign(url, b'{"messages":[]}', cred, "us-east-1")
    tampered = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
    try:
        async with session().post(URL(url, encoded=True), data=tampered, headers=signed) as resp:
            assert resp.status == 403
            assert "signature we calculated does not match" in (await resp.json())["message"]
    finally:
        await close_sessions()


@pytest.mark.asyncio
async def test_inference_profile_arn_as_model_id(fake: FakeBedrock, cred: Credential) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0"
    out = await complete(arn, cred)
    assert out["choices"][0]["message"]["content"] == "You said: hello there world"
    assert fake.requests[-1]["model"] == arn
    assert "%2F" in fake.requests[-1]["path"]
