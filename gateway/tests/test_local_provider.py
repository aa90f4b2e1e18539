"""The `local` provider with the real SmolLM2-135M-Instruct (no mocks, no network).

The converted weights are cached under the default `OPENTRACY_LOCAL_MODEL_DIR` (var/models), so only
the first run pays the GGUF conversion; the tests also pass when the cache is absent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django

django.setup()

import pytest  # noqa: E402
from django.conf import settings  # noqa: E402

from gateway.errors import GatewayError  # noqa: E402
from gateway.providers import local  # noqa: E402
from gateway.providers.local import LocalProvider  # noqa: E402

PROVIDER = LocalProvider()
CRED = PROVIDER.credential(None)
MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def body(**extra: Any) -> dict[str, Any]:
    return {"model": f"local/{MODEL}", "messages": QUESTION, "temperature": 0, "max_tokens": 24, **extra}


@pytest.fixture(scope="module")
def loaded() -> local.LoadedModel:
    return local.ensure_loaded()


async def collect(request: dict[str, Any]) -> list[dict[str, Any]]:
    assert CRED is not None
    return [chunk async for chunk in PROVIDER.stream(request, MODEL, CRED)]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_import_does_not_load_torch_and_no_key_is_needed() -> None:
    code = (
        "import sys, django; django.setup(); import gateway.providers.local; "
        "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "opentracy_site.settings"}
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR).returncode == 0
    assert CRED is not None and CRED.api_key is None
    assert PROVIDER.known_models == (MODEL, "all-minilm-l6-v2")
    assert local.gguf_path().is_file()


@pytest.mark.asyncio
async def test_complete_answers_with_exact_usage(loaded: local.LoadedModel) -> None:
    assert CRED is not None
    data = await PROVIDER.complete(body(), MODEL, CRED)
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["model"] == MODEL and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    ids = loaded.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    usage = data["usage"]
    assert usage["prompt_tokens"] == len(ids)
    assert 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.asyncio
async def test_stream_matches_complete(loaded: local.LoadedModel) -> None:
    assert CRED is not None
    chunks = await collect(body())
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c for c in chunks[1:] if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(contents) >= 2
    final, last = chunks[-2], chunks[-1]
    assert final["choices"][0]["finish_reason"] in {"stop", "length"}
    assert last["choices"] == []
    done = await PROVIDER.complete(body(), MODEL, CRED)
    assert streamed_text(chunks) == done["choices"][0]["message"]["content"]
    assert last["usage"] == done["usage"]
    assert final["choices"][0]["finish_reason"] == done["choices"][0]["finish_reason"]


@pytest.mark.asyncio
async def test_max_tokens_gives_length(loaded: local.LoadedModel) -> None:
    assert CRED is not None
    request = body(messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=5)
    data = await PROVIDER.complete(request, MODEL, CRED)
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 5
    chunks = await collect(request)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.asyncio
async def test_stop_string_cuts_text_in_both_modes(loaded: local.LoadedModel) -> None:
    assert CRED is not None
    data = await PROVIDER.complete(body(stop=[" Paris", "zzz"]), MODEL, CRED)
    content = data["choices"][0]["message"]["content"]
    assert "Paris" not in content and content.startswith("The capital")
    assert data["choices"][0]["finish_reason"] == "stop"
    chunks = await collect(body(stop=" Paris"))
    assert streamed_text(chunks) == content
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.asyncio
async def test_disconnect_stops_generation(loaded: local.LoadedModel) -> None:
    assert CRED is not None
    request = body(messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=2000)
    stream = PROVIDER.stream(request, MODEL, CRED)
    seen = [await anext(stream) for _ in range(3)]
    assert seen[0]["choices"][0]["delta"]["role"] == "assistant"
    await stream.aclose()  # type: ignore[attr-defined]
    started = time.perf_counter()
    data = await PROVIDER.complete(body(max_tokens=2), MODEL, CRED)  # queued behind the abandoned generation
    assert data["usage"]["completion_tokens"] == 2
    assert time.perf_counter() - started < 10  # 2,000 tokens would take about a minute


def test_check_rejects_what_it_cannot_honour() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    cases: list[dict[str, Any]] = [
        {"tools": tools, "tool_choice": "auto"},
        {"n": 2},
        {"logprobs": True},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    ]
    for extra in cases:
        with pytest.raises(GatewayError) as err:
            PROVIDER.check(body(**extra))
        assert err.value.status == 422, extra
    with pytest.raises(GatewayError) as err:
        PROVIDER.check(body(model="local/smollm2-9b"))
    assert err.value.status == 404
    PROVIDER.check(body(response_format={"type": "json_object"}, logprobs=False, n=1))


@pytest.mark.asyncio
async def test_unknown_model_is_not_found() -> None:
    assert CRED is not None
    with pytest.raises(GatewayError) as err:
        await PROVIDER.complete(body(), "smollm2-9b", CRED)
    assert err.value.status == 404 and err.value.code == "model_not_found"


def test_second_load_comes_from_the_safetensors_cache(loaded: local.LoadedModel) -> None:
    cache = settings.OPENTRACY_LOCAL_MODEL_DIR / MODEL
    assert (cache / "model.safetensors").is_file() and (cache / "config.json").is_file()
    again = local.load_model()
    assert again.source == "cache"
    ids = again.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert (
        ids == loaded.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    )
