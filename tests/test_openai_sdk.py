"""The official OpenAI SDK against the running engine (real socket), fake providers behind it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)
MESSAGES: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there engine"}]


def test_chat_completion_is_answered_and_traced(client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=MESSAGES, user="u-1", metadata={"feature": "greeting"}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "You said: hello there engine"
    trace_id = raw.headers["x-opentracy-trace-id"]
    assert raw.headers["x-opentracy-model"] == "openai/gpt-4o-mini"
    assert float(raw.headers["x-opentracy-overhead-ms"]) >= 0
    row = read_trace(trace_id)
    assert row["status"] == 200
    assert row["provider"] == "openai"
    assert row["resolved_model"] == "openai/gpt-4o-mini"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (5, 5, 0)
    # gpt-4o-mini: $0.15 / $0.60 per million tokens.
    assert row["cost_input_usd"] == pytest.approx(5 * 0.15 / 1e6)
    assert row["cost_output_usd"] == pytest.approx(5 * 0.60 / 1e6)
    assert row["cost_total_usd"] == pytest.approx(5 * 0.75 / 1e6)
    assert json.loads(row["request_messages"]) == MESSAGES
    assert json.loads(row["response_message"])["content"] == "You said: hello there engine"
    assert row["user"] == "u-1" and row["metadata"] == {"feature": "greeting"}
    assert row["latency_ms"] >= row["overhead_ms"] > 0
    assert row["stream"] is False and row["finish_reason"] == "stop"


def test_metadata_is_not_sent_upstream(client: Any, providers: dict[str, Any]) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, metadata={"k": "v"})
    sent = providers["openai"].requests[-1]
    assert "metadata" not in sent["body"]
    assert sent["headers"]["Authorization"] == f"Bearer {FAKE_OPENAI_KEY}"


def test_cached_tokens_and_unknown_price(client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(model="openai/no-price-cached-model", messages=MESSAGES)
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["cached_tokens"] == 3
    assert row["cost_total_usd"] is None and row["cost_input_usd"] is None  # unknown, never 0


def test_price_override_from_db(client: Any, people: dict[str, Any]) -> None:
    from gateway.models import ModelPrice

    ModelPrice.objects.create(
        project=people["project"], model="openai/house-model", input_per_mtok=1, output_per_mtok=2
    )
    from traces.cost import invalidate_overrides

    invalidate_overrides()
    raw = client.chat.completions.with_raw_response.create(model="openai/house-model", messages=MESSAGES)
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["cost_total_usd"] == pytest.approx((5 * 1 + 5 * 2) / 1e6)


def test_streaming_with_usage(client: Any) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello there engine"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 5
    trace_id = stream.response.headers["x-opentracy-trace-id"]
    row = read_trace(trace_id)
    assert row["stream"] is True and row["ttft_ms"] is not None
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 5)
    assert row["cost_total_usd"] == pytest.approx(5 * 0.75 / 1e6)


def test_streaming_without_usage_hides_usage_chunk_but_costs_exactly(client: Any) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    row = read_trace(stream.response.headers["x-opentracy-trace-id"])
    assert row["completion_tokens"] == 5 and row["cost_total_usd"] is not None


def test_tools_round_trip(client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    completion = client.chat.completions.create(
        model="openai/gpt-tool", messages=MESSAGES, tools=tools, tool_choice="auto"
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_is_traced(client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    stream = client.chat.completions.create(model="openai/gpt-tool", messages=MESSAGES, tools=tools, stream=True)
    list(stream)
    row = read_trace(stream.response.headers["x-opentracy-trace-id"])
    message = json.loads(row["response_message"])
    assert message["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert row["finish_reason"] == "tool_calls"


def test_json_schema_response_format(client: Any) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    completion = client.chat.completions.create(
        model="openai/gpt-json",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        seed=7,
        temperature=0.2,
        max_completion_tokens=50,
        stop=["\n\n"],
    )
    assert json.loads(completion.choices[0].message.content) == {"answer": "hello there engine"}


def test_n_choices(client: Any) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]


def test_anthropic_through_the_gateway(client: Any, providers: dict[str, Any]) -> None:
    raw = client.chat.completions.with_raw_response.create(model="claude-haiku-4-5", messages=MESSAGES, max_tokens=20)
    completion = raw.parse()
    assert completion.choices[0].message.content == "You said: hello there engine"
    sent = providers["anthropic"].requests[-1]
    assert sent["body"]["system"] == "Be brief." and sent["headers"]["x-api-key"] == FAKE_ANTHROPIC_KEY
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["provider"] == "anthropic" and row["prompt_tokens"] == 5


def test_anthropic_streaming_tool_call(client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    stream = client.chat.completions.create(
        model="anthropic/claude-tool",
        messages=MESSAGES,
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(args) == {"city": "Paris"}
    assert chunks[-1].usage is not None


def test_models_lists_aliases_and_configured_providers(client: Any, people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    alias_set(project=people["project"], name="smart", target="openai/gpt-4o", changed_by="test")
    ids = {m.id for m in client.models.list()}
    assert {"smart", "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "local/smollm2-135m-instruct"} <= ids
    assert client.models.retrieve("smart").owned_by == "alias:openai/gpt-4o"
    # The router's names: `auto` (the built-in policy until one is the default) and each policy.
    assert client.models.retrieve("auto").owned_by == "router:auto"
    from routing.models import RoutingPolicy

    RoutingPolicy.objects.create(
        project=people["project"], name="support", candidates=["openai/gpt-4o"], is_default=True
    )
    assert client.models.retrieve("auto").owned_by == "router:support"
    assert client.models.retrieve("router/support").owned_by == "router"


def test_alias_is_resolved_by_the_engine(client: Any, people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    alias_set(project=people["project"], name="smart", target="anthropic/claude-haiku-4-5", changed_by="test")
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=MESSAGES, max_tokens=10)
    assert raw.headers["x-opentracy-model"] == "anthropic/claude-haiku-4-5"
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["alias"] == "smart" and row["requested_model"] == "smart"
    # Re-pointing takes effect on the next request, without a deploy.
    alias_set(project=people["project"], name="smart", target="openai/gpt-4o", changed_by="test")
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=MESSAGES)
    assert raw.headers["x-opentracy-model"] == "openai/gpt-4o"


async def test_async_client_plain_and_streaming(async_client: Any) -> None:
    completion = await async_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == "You said: hello there engine"
    stream = await async_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "You said: hello there engine"


test_async_client_plain_and_streaming = pytest.mark.asyncio(test_async_client_plain_and_streaming)


def test_local_model_answers_without_any_provider_key(client: Any) -> None:
    """SmolLM2 runs in-process: the real model answers a real prompt."""
    question = [{"role": "user", "content": "What is the capital of France?"}]
    client = client.with_options(timeout=120)  # a fresh checkout converts the GGUF first (~25 s)
    raw = client.chat.completions.with_raw_response.create(
        model="local/smollm2-135m-instruct", messages=question, max_tokens=12, temperature=0
    )
    completion = raw.parse()
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens <= 12
    stream = client.chat.completions.create(
        model="local/smollm2-135m-instruct", messages=question, max_tokens=12, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == completion.choices[0].message.content  # greedy: same tokens either way
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["provider"] == "local" and row["cost_total_usd"] == 0.0
    assert row["prompt_tokens"] == completion.usage.prompt_tokens > 0
