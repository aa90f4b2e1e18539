"""POST /v1/messages with the official Anthropic SDK as the client: an app on Anthropic's SDK points
at the engine and is routed to any provider, streamed in Anthropic's event format, and traced."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def claude(server_url: str, api_key: str, providers: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server_url, api_key=api_key, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", ["openai/gpt-4.1", "anthropic/claude-haiku-4-5"])
def test_plain_message_to_any_provider(claude: anthropic.Anthropic, fake_openai: Any, model: str) -> None:
    raw = claude.messages.with_raw_response.create(
        model=model,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello engine"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.content[0].type == "text" and message.content[0].text == "You said: hello engine"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["endpoint"] == "messages" and row["status"] == 200 and row["resolved_model"] == model
    assert json.loads(row["request_messages"])[0] == {"role": "system", "content": "Be brief."}
    if model.startswith("openai"):
        assert fake_openai.requests[-1]["body"]["max_tokens"] == 100


def test_streaming_with_the_sdk_helper(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="openai/gpt-4.1", max_tokens=50, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "You said: one two three" and len(pieces) > 1
    block = final.content[0]
    assert block.type == "text" and block.text == "You said: one two three"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


def test_tool_call_round_trip(claude: anthropic.Anthropic, fake_openai: Any) -> None:
    ask: Any = [{"role": "user", "content": "weather in Paris?"}]
    first = claude.messages.create(model="openai/gpt-tool", max_tokens=50, tools=[WEATHER], messages=ask)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    with claude.messages.stream(model="openai/gpt-tool", max_tokens=50, tools=[WEATHER], messages=ask) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[-1].type == "tool_use" and streamed.content[-1].input == {"city": "Paris"}
    history: Any = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    answer = claude.messages.create(model="openai/gpt-4.1", max_tokens=50, tools=[WEATHER], messages=history)
    assert answer.content[0].type == "text"
    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18°C, sunny"}


def test_images_pass_through(claude: anthropic.Anthropic, fake_openai: Any) -> None:
    blocks: list[Any] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "what is this"},
    ]
    claude.messages.create(model="openai/gpt-4.1", max_tokens=20, messages=[{"role": "user", "content": blocks}])
    parts = fake_openai.requests[-1]["body"]["messages"][0]["content"]
    assert parts[0]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="
    assert parts[1]["image_url"]["url"] == "https://example.com/cat.png"


def test_errors_in_anthropic_shape(claude: anthropic.Anthropic, server_url: str, outsider_key: str) -> None:
    ask: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.NotFoundError) as err:
        claude.messages.create(model="nope/none", max_tokens=10, messages=ask)
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="openai/error-429", max_tokens=10, messages=ask, extra_headers={"x-opentracy-retries": "0"}
        )
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        claude.messages.create(model="openai/gpt-4.1", max_tokens=0, messages=ask)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server_url, api_key="ot-wrong", max_retries=0).messages.create(
            model="openai/gpt-4.1", max_tokens=10, messages=ask
        )
    outsider = anthropic.Anthropic(base_url=server_url, api_key=outsider_key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="not configured"):
        outsider.messages.create(model="openai/gpt-4.1", max_tokens=10, messages=ask)


def test_stream_failure_after_content_is_an_error_event(server_url: str, api_key: str, providers: Any) -> None:
    body = {
        "model": "openai/gpt-cut",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d"}],
    }
    with httpx.stream("POST", f"{server_url}/v1/messages", json=body, headers={"x-api-key": api_key}) as resp:
        events = [line.removeprefix("event: ") for line in resp.iter_lines() if line.startswith("event: ")]
        trace_id = resp.headers["x-opentracy-trace-id"]
    assert events[0] == "message_start" and "content_block_delta" in events
    assert events[-1] == "error" and "message_stop" not in events
    assert read_trace(trace_id)["status"] == 502


def test_stream_events_validate_against_the_sdk_types(server_url: str, api_key: str, providers: Any) -> None:
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
    body = {
        "model": "openai/gpt-tool",
        "max_tokens": 20,
        "stream": True,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "hi"}],
    }
    with httpx.stream("POST", f"{server_url}/v1/messages", json=body, headers={"x-api-key": api_key}) as resp:
        data = [orjson.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    kinds = [adapter.validate_python(d).type for d in data]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


def test_streaming_to_an_anthropic_model_is_traced(claude: anthropic.Anthropic, fake_anthropic: Any) -> None:
    with claude.messages.stream(
        model="anthropic/claude-haiku-4-5",
        max_tokens=50,
        system=[{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
        messages=[{"role": "user", "content": "one two three"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        trace_id = stream.response.headers["x-opentracy-trace-id"]
    assert "".join(pieces) == "You said: one two three"
    assert final.stop_reason == "end_turn" and final.model == "anthropic/claude-haiku-4-5"
    # The fake counts words: "Be brief." + "one two three" in, "You said: one two three" out.
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 5)
    assert fake_anthropic.requests[-1]["body"]["system"] == "Be\nbrief."  # system blocks joined by newlines
    row = read_trace(trace_id)
    assert row["endpoint"] == "messages" and row["stream"] and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 5) and row["finish_reason"] == "stop"


def test_tool_round_trip_through_an_anthropic_model(claude: anthropic.Anthropic, fake_anthropic: Any) -> None:
    ask: Any = [{"role": "user", "content": "weather in Paris?"}]
    first = claude.messages.create(
        model="anthropic/claude-tool", max_tokens=50, tools=[WEATHER], tool_choice={"type": "any"}, messages=ask
    )
    call = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    sent = fake_anthropic.requests[-1]["body"]
    assert sent["tool_choice"] == {"type": "any"} and sent["tools"][0]["input_schema"] == WEATHER["input_schema"]
    history: Any = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "no data", "is_error": True}],
        },
    ]
    claude.messages.create(model="anthropic/claude-haiku-4-5", max_tokens=50, tools=[WEATHER], messages=history)
    turns = fake_anthropic.requests[-1]["body"]["messages"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "Error: no data"}]


def test_cached_tokens_are_reported_apart(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="openai/gpt-cached", max_tokens=20, messages=[{"role": "user", "content": "a b c d e"}]
    )
    # The fake OpenAI says prompt_tokens=5 of which 3 cached: Anthropic counts input apart from cache reads.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (2, 3)
    assert message.usage.cache_creation_input_tokens == 0


def test_either_key_header_is_accepted(server_url: str, api_key: str, providers: Any) -> None:
    # SDK 2.x sends `Authorization: Bearer` (the fixture above); 1.x and curl users send `x-api-key`.
    body = {"model": "openai/gpt-4.1", "max_tokens": 20, "messages": [{"role": "user", "content": "hey"}]}
    headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    resp = httpx.post(f"{server_url}/v1/messages", json=body, headers=headers, timeout=20)
    assert resp.status_code == 200
    message = anthropic.types.Message.model_validate(resp.json())
    assert message.content[0].type == "text" and message.content[0].text == "You said: hey"


def test_unsupported_parameters_are_refused(claude: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.UnprocessableEntityError) as err:
        claude.messages.create(model="openai/gpt-4.1", max_tokens=10, messages=ask, extra_body={"top_k": 5})
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "top_k" in err.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.UnprocessableEntityError):
        claude.messages.create(
            model="openai/gpt-4.1", max_tokens=10, messages=ask, thinking={"type": "enabled", "budget_tokens": 1024}
        )


def test_stream_errors_before_the_first_byte_are_plain_errors(claude: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "x"}]
    with (
        pytest.raises(anthropic.RateLimitError) as err,
        claude.messages.stream(
            model="openai/error-429", max_tokens=10, messages=ask, extra_headers={"x-opentracy-retries": "0"}
        ) as stream,
    ):
        stream.get_final_message()
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
