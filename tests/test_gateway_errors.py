"""Bad input and bad upstreams: each gets OpenAI's error shape with the right status (so the SDK
raises its matching exception class), and the failed request is still traced."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]


def _post_raw(server_url: str, api_key: str, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{server_url}/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {api_key}", "content-type": "application/json"},
        timeout=20,
    )


def test_missing_and_invalid_keys_are_401(server_url: str, api_key: str, providers: Any) -> None:
    for key in ("", "ot-not-a-real-key"):
        bad = openai.OpenAI(base_url=f"{server_url}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert err.value.code == "invalid_api_key"
    resp = httpx.post(f"{server_url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "invalid_request_error"


def test_revoked_key_is_refused(server_url: str, api_key: str, providers: Any) -> None:
    from gateway.keys import hash_key
    from gateway.models import ApiKey
    from gateway.services import api_key_revoke

    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # cached as valid
    api_key_revoke(api_key=ApiKey.objects.get(key_hash=hash_key(api_key)))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_malformed_json_is_400_and_traced_with_the_body(server_url: str, api_key: str, providers: Any) -> None:
    resp = _post_raw(server_url, api_key, b'{"model": "gpt-4o-mini", "messages": [')
    assert resp.status_code == 400
    assert "parse the JSON" in resp.json()["error"]["message"]
    row = read_trace(resp.headers["x-opentracy-trace-id"])
    assert row["status"] == 400 and row["error_class"] == "invalid_request_error"
    assert row["request_messages"] == '{"model": "gpt-4o-mini", "messages": ['  # nothing lost


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
        ({"messages": MESSAGES, "n": True}, "n"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"messages": MESSAGES, "metadata": {"k": 1}}, "metadata"),
    ],
)
def test_wrong_types_are_400_with_param(client: Any, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", **kwargs)
    assert err.value.param == param
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 400


def test_missing_messages_is_400(server_url: str, api_key: str, providers: Any) -> None:
    resp = _post_raw(server_url, api_key, b'{"model": "gpt-4o-mini"}')
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "missing_required_parameter"


def test_oversize_body_is_413(client: Any, settings: Any) -> None:
    settings.OPENTRACY_MAX_BODY_BYTES = 2000
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 5000}])
    assert err.value.status_code == 413 and err.value.code == "request_too_large"
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 413


def test_unknown_model_is_404(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert err.value.code == "model_not_found"
    assert "sk-" not in err.value.message
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 404 and row["requested_model"] == "no-such-model"


def test_parameter_a_provider_cannot_honour_is_422(client: Any) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES, seed=3)
    assert err.value.param == "seed"


def test_unconfigured_provider_is_a_clear_400(
    server_url: str, outsider_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key=outsider_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.code == "provider_not_configured" and "OPENAI_API_KEY" in err.value.message


@pytest.mark.parametrize(
    ("model", "exc", "status"),
    [
        ("openai/gpt-error-400", openai.BadRequestError, 400),
        ("openai/gpt-error-429", openai.RateLimitError, 429),
        ("openai/gpt-error-500", openai.InternalServerError, 502),
        ("openai/gpt-garbage", openai.InternalServerError, 502),
        ("openai/gpt-slow", openai.InternalServerError, 504),
        ("anthropic/claude-error-429", openai.RateLimitError, 429),
        ("anthropic/claude-garbage", openai.InternalServerError, 502),
    ],
)
def test_upstream_failures(client: Any, model: str, exc: type[Exception], status: int) -> None:
    with pytest.raises(exc) as err:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert err.value.status_code == status  # type: ignore[attr-defined]
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])  # type: ignore[attr-defined]
    assert row["status"] == status and row["error_class"]


@pytest.mark.parametrize("model", ["openai/gpt-cut", "openai/gpt-stream-error", "anthropic/claude-cut"])
def test_stream_failing_after_first_byte_ends_with_error_not_done(client: Any, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "the stream should have started before failing"
    row = read_trace(stream.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 502 and row["stream"] is True
    assert row["response_message"]  # the partial answer is kept


def test_unknown_route_is_openai_shaped_404(server_url: str) -> None:
    resp = httpx.get(f"{server_url}/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_url"


def test_client_disconnect_mid_stream_stops_the_upstream(
    server_url: str, api_key: str, providers: dict[str, Any]
) -> None:
    fake = providers["openai"]
    finished_before = fake.finished_streams
    body = {"model": "openai/gpt-long", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST", f"{server_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    ) as resp:
        trace_id = resp.headers["x-opentracy-trace-id"]
        next(resp.iter_raw())  # the first events arrive, then the caller hangs up
    row = read_trace(trace_id)
    assert row["status"] == 499 and row["error_class"] == "client_disconnected"
    assert row["completion_tokens"] == 0  # no usage: the upstream was cut off before the end
    time.sleep(0.5)
    assert fake.finished_streams == finished_before  # the upstream stream was abandoned, not drained
