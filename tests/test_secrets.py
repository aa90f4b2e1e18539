"""Provider keys never reach a trace, a log line or an error message; they are encrypted at rest."""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest

from conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
SECRETS = (FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY)


def test_keys_never_leak(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors = []
    ids = [
        client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES).headers[
            "x-opentracy-trace-id"
        ]
    ]
    stream = client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES, stream=True)
    list(stream)
    ids.append(stream.response.headers["x-opentracy-trace-id"])
    # Upstreams that echo the key they were sent, in an error body or mid-stream.
    for model in ("openai/gpt-auth", "anthropic/claude-auth", "openai/gpt-error-400"):
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=model, messages=MESSAGES)
        errors.append(err.value.message + err.value.response.text)
        ids.append(err.value.response.headers["x-opentracy-trace-id"])
    stream = client.chat.completions.create(model="openai/gpt-stream-error", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as stream_err:
        list(stream)
    errors.append(str(stream_err.value))
    ids.append(stream.response.headers["x-opentracy-trace-id"])

    rows = [read_trace(trace_id) for trace_id in ids]
    stored = repr(rows)
    for secret in SECRETS:
        assert secret not in stored, "a provider key was written to a trace"
        assert secret not in caplog.text, "a provider key was written to the log"
        assert all(secret not in e for e in errors), "a provider key was sent back to the caller"


def test_credentials_are_encrypted_at_rest(providers: dict[str, Any]) -> None:
    from gateway.crypto import decrypt
    from gateway.models import ProviderCredential

    cred = ProviderCredential.objects.get(provider="openai")
    assert FAKE_OPENAI_KEY not in cred.api_key_encrypted
    assert decrypt(cred.api_key_encrypted) == FAKE_OPENAI_KEY
