"""POST /v1/embeddings through the OpenAI SDK: an OpenAI-compatible upstream and the local MiniLM
model, traced like chat."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest

from tests.openapi import assert_valid
from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)


def test_openai_compatible_embeddings(client: Any, fake_openai: Any) -> None:
    raw = client.embeddings.with_raw_response.create(model="openai/text-embedding-3-small", input=["a b", "c"])
    result = raw.parse()  # the SDK asks for base64 and decodes it
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert fake_openai.requests[-1]["body"]["input"] == ["a b", "c"]
    assert "encoding_format" not in fake_openai.requests[-1]["body"]
    assert result.data[0].embedding[0] == pytest.approx(((len("a b") + 0) % 7) / 7, rel=1e-6)
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["endpoint"] == "embeddings" and row["status"] == 200 and row["prompt_tokens"] == 3
    assert row["provider"] == "openai" and row["request_messages"] == '["a b","c"]'


def test_float_format_matches_the_spec(server_url: str, api_key: str, providers: Any) -> None:
    resp = httpx.post(
        f"{server_url}/v1/embeddings",
        json={"model": "openai/text-embedding-3-small", "input": "hello", "encoding_format": "float"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert resp.status_code == 200
    assert_valid("CreateEmbeddingResponse", resp.json())


def test_local_minilm_embeddings(client: Any) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="local/all-minilm-l6-v2",
        input=["How do I reset my card PIN?", "I forgot my card's PIN", "Weather in Paris"],
    )
    vectors = [d.embedding for d in raw.parse().data]
    assert all(len(v) == 384 for v in vectors)
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.3  # a real model, not noise
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["provider"] == "local" and row["prompt_tokens"] > 10 and row["cost_total_usd"] == 0.0


def test_bad_embedding_requests(client: Any, server_url: str, api_key: str) -> None:
    for body, param in (({"model": "openai/text-embedding-3-small"}, "input"), ({"input": "x"}, "model")):
        resp = httpx.post(f"{server_url}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {api_key}"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param
    with pytest.raises(openai.UnprocessableEntityError, match="no embeddings"):
        client.embeddings.create(model="anthropic/claude-haiku-4-5", input="x")
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model="local/all-minilm-l6-v2", messages=[{"role": "user", "content": "x"}])


def test_embeddings_retry_and_outsider(client: Any, server_url: str, outsider_key: str) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.embeddings.create(model="openai/error-500", input="x")
    assert read_trace(err.value.response.headers["x-opentracy-trace-id"])["retries"] == 2
    outsider = openai.OpenAI(base_url=f"{server_url}/v1", api_key=outsider_key, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="not configured"):
        outsider.embeddings.create(model="openai/text-embedding-3-small", input="x")
