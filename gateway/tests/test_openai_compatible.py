"""The OpenAI-compatible providers (one Spec each) and Azure OpenAI, through the engine against the
fake OpenAI server: each gets its own URL, auth header and request quirks right."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.providers import PROVIDERS
from gateway.providers.openai import SPECS
from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)
COMPATIBLE = [s.name for s in SPECS]
ASK = [{"role": "user", "content": "hi there"}]


def test_at_least_sixteen_providers() -> None:
    assert len(PROVIDERS) >= 16
    assert {"openai", "mistral", "groq", "together", "fireworks", "deepseek", "xai", "perplexity"} <= set(PROVIDERS)
    assert {"cerebras", "openrouter", "ollama", "vllm", "custom", "azure", "anthropic", "local"} <= set(PROVIDERS)


@pytest.mark.parametrize("name", COMPATIBLE)
def test_each_compatible_provider_plain_and_streaming(
    client: Any, people: dict[str, Any], fake_openai: Any, name: str
) -> None:
    from gateway.services import credential_set

    key = f"sk-{name}-test-key"
    credential_set(project=people["project"], provider=name, api_key=key, base_url=f"{fake_openai.base_url}/v1")
    before = len(fake_openai.requests)
    raw = client.chat.completions.with_raw_response.create(
        model=f"{name}/some-model", messages=ASK, max_completion_tokens=20
    )
    assert raw.parse().choices[0].message.content == "You said: hi there"
    sent = fake_openai.requests[before]
    assert sent["headers"]["Authorization"] == f"Bearer {key}" and sent["body"]["model"] == "some-model"
    spec = next(s for s in SPECS if s.name == name)
    if spec.max_completion_tokens:
        assert sent["body"]["max_completion_tokens"] == 20
    else:  # most compatible servers only know max_tokens
        assert sent["body"]["max_tokens"] == 20 and "max_completion_tokens" not in sent["body"]
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["provider"] == name and row["resolved_model"] == f"{name}/some-model" and row["prompt_tokens"] == 2

    stream = client.chat.completions.create(model=f"{name}/some-model", messages=ASK, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: hi there"
    streamed = fake_openai.requests[-1]["body"]
    assert ("stream_options" in streamed) == spec.stream_options


def test_custom_provider_needs_a_registered_base_url(client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="`custom` is not configured"):
        client.chat.completions.create(model="custom/anything", messages=ASK)


def test_self_hosted_without_a_key(client: Any, people: dict[str, Any], fake_openai: Any) -> None:
    from gateway.services import credential_set

    credential_set(project=people["project"], provider="vllm", api_key="", base_url=f"{fake_openai.base_url}/v1")
    before = len(fake_openai.requests)
    assert client.chat.completions.create(model="vllm/my-student", messages=ASK).choices
    assert "Authorization" not in fake_openai.requests[before]["headers"]


def test_azure_deployment_url_api_key_header_and_version(client: Any, people: dict[str, Any], fake_openai: Any) -> None:
    from gateway.services import credential_set

    credential_set(
        project=people["project"],
        provider="azure",
        api_key="azure-secret-key",
        base_url=fake_openai.base_url,
        options={"api_version": "2024-10-21"},
    )
    before = len(fake_openai.requests)
    raw = client.chat.completions.with_raw_response.create(model="azure/my-gpt4o-deployment", messages=ASK)
    assert raw.parse().choices[0].message.content == "You said: hi there"
    sent = fake_openai.requests[before]
    assert sent["path"] == "/openai/deployments/my-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "azure-secret-key" and "Authorization" not in sent["headers"]
    stream = client.chat.completions.create(model="azure/my-gpt4o-deployment", messages=ASK, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: hi there"
    assert read_trace(raw.headers["x-opentracy-trace-id"])["provider"] == "azure"


def test_models_list_shows_configured_providers(client: Any, people: dict[str, Any], fake_openai: Any) -> None:
    from gateway.services import credential_set

    credential_set(project=people["project"], provider="mistral", api_key="k", base_url=f"{fake_openai.base_url}/v1")
    ids = {m.id for m in client.models.list()}
    assert "mistral/mistral-large-latest" in ids and "openai/gpt-4.1" in ids
    assert not any(i.startswith("groq/") for i in ids)
