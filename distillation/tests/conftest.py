"""Fixtures of the distillation tests: a fake vLLM server (its dynamic LoRA API and chat on
loopback), registered as the project's `vllm` credential."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.services import credential_set
from tests.fakes.vllm_upstream import FakeVllm


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[FakeVllm]:
    fake = FakeVllm()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def vllm(fake_vllm: FakeVllm, people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> FakeVllm:
    """The fake registered as the project's `vllm` credential, fresh for each test."""
    for var in ("VLLM_BASE_URL", "VLLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    fake_vllm.requests.clear()
    fake_vllm.loaded.clear()
    fake_vllm.runtime_updates = True
    credential_set(project=people["project"], provider="vllm", api_key="", base_url=f"{fake_vllm.base_url}/v1")
    return fake_vllm
