"""/v1 responses, stream chunks, model lists and error bodies validated against OpenAI's
published OpenAPI description."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.openapi import assert_valid

pytestmark = pytest.mark.django_db(transaction=True)
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi contract"}]}


@pytest.fixture
def http(server_url: str, api_key: str, providers: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20)


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "anthropic/claude-haiku-4-5", "anthropic/claude-tool"])
def test_completion_matches_schema(http: httpx.Client, model: str) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    resp = http.post("/v1/chat/completions", json={**BODY, "model": model, "tools": tools})
    assert resp.status_code == 200
    assert_valid("CreateChatCompletionResponse", resp.json())


@pytest.mark.parametrize(
    "model", ["gpt-4o-mini", "openai/gpt-tool", "anthropic/claude-haiku-4-5", "anthropic/claude-tool"]
)
def test_stream_chunks_match_schema(http: httpx.Client, model: str) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    body = {**BODY, "model": model, "stream": True, "stream_options": {"include_usage": True}, "tools": tools}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp.text)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(event))


def test_models_match_schema(http: httpx.Client) -> None:
    listed = http.get("/v1/models").json()
    assert_valid("ListModelsResponse", listed)
    assert_valid("Model", http.get("/v1/models/local/smollm2-135m-instruct").json())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"model": "gpt-4o-mini"}', 400),
        (b'{"model": "nope-model", "messages": [{"role": "user", "content": "x"}]}', 404),
        (b'{"model": "openai/gpt-error-500", "messages": [{"role": "user", "content": "x"}]}', 502),
    ],
)
def test_error_bodies_match_schema(http: httpx.Client, body: bytes, status: int) -> None:
    resp = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status
    assert_valid("ErrorResponse", resp.json())


def test_unauthenticated_error_matches_schema(server_url: str) -> None:
    resp = httpx.post(f"{server_url}/v1/chat/completions", json=BODY)
    assert resp.status_code == 401
    assert_valid("ErrorResponse", resp.json())
