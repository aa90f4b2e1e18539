"""Faults in front of the gateway: retries, fallbacks, cooldowns, load balancing and limits, each
driven through the real engine by the OpenAI SDK against fake upstreams, and each checked in the
trace the engine wrote."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from conftest import FAKE_OPENAI_KEY
from tests.support import clear_of_midnight, read_trace

pytestmark = pytest.mark.django_db(transaction=True)


def ask(text: str = "") -> list[Any]:
    # A unique prompt per test keeps the fake's per-prompt "flaky" counters apart.
    return [{"role": "user", "content": text or f"hello {uuid.uuid4().hex[:8]}"}]


@pytest.fixture(autouse=True)
def _fresh_state(settings: Any) -> Any:
    from gateway import failover, limits

    settings.OPENTRACY_RETRY_BACKOFF_S = 0.01
    failover.reset()
    limits.reset()
    yield
    failover.reset()
    limits.reset()


def attempts(row: dict[str, Any]) -> list[tuple[str, int, str]]:
    # Named tuples come back from ClickHouse as dicts.
    return [(a["target"], a["status"], a["error_class"]) for a in row["attempts"]]


# ---------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_errors_are_retried_then_succeed(client: Any, status: int) -> None:
    raw = client.chat.completions.with_raw_response.create(model=f"openai/flaky2-{status}", messages=ask())
    assert raw.parse().choices[0].message.content.startswith("You said:")
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["status"] == 200 and row["retries"] == 2 and row["fallbacks"] == 0
    assert [a[1] for a in attempts(row)] == [status, status, 200]


def test_retry_budget_exhausted_gives_the_last_error(client: Any) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="openai/flaky5-503", messages=ask())
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 502 and row["retries"] == 2 and len(row["attempts"]) == 3


@pytest.mark.parametrize(
    "model, exc", [("openai/error-400", openai.BadRequestError), ("openai/auth", openai.APIStatusError)]
)
def test_client_errors_are_not_retried(
    client: Any, fake_openai: Any, model: str, exc: type[openai.APIStatusError]
) -> None:
    before = len(fake_openai.requests)
    with pytest.raises(exc) as err:
        client.chat.completions.create(model=model, messages=ask())
    assert len(fake_openai.requests) == before + 1
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["retries"] == 0 and len(row["attempts"]) == 1
    assert FAKE_OPENAI_KEY not in str(err.value) and FAKE_OPENAI_KEY not in row["error_message"]


def test_retry_after_is_honoured(client: Any) -> None:
    t = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="openai/flaky1-429ra", messages=ask())
    assert time.monotonic() - t >= 1.0  # the fake said Retry-After: 1
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert [a[1] for a in attempts(row)] == [429, 200]
    assert row["overhead_ms"] < 500  # the wait is not the engine's overhead


def test_retries_can_be_overridden_per_request(client: Any, server_url: str, api_key: str) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(
            model="openai/flaky1-500", messages=ask("once"), extra_body={"opentracy": {"retries": 0}}
        )
    assert read_trace(err.value.response.headers["x-opentracy-trace-id"])["retries"] == 0
    resp = httpx.post(
        f"{server_url}/v1/chat/completions",
        json={"model": "openai/gpt-4o-mini", "messages": ask(), "opentracy": {"retries": 99}},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "opentracy.retries"


def test_retries_header_zero_fails_fast(client: Any) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(
            model="openai/flaky1-500", messages=ask(), extra_headers={"x-opentracy-retries": "0"}
        )
    assert len(read_trace(err.value.response.headers["x-opentracy-trace-id"])["attempts"]) == 1


def test_alias_retry_budget(client: Any, people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    alias_set(project=people["project"], name="patient", target="openai/flaky4-503", retries=4, changed_by="t")
    raw = client.chat.completions.with_raw_response.create(model="patient", messages=ask())
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["status"] == 200 and row["retries"] == 4 and row["alias"] == "patient"


# ---------------------------------------------------------------- fallbacks


def _alias(server_url: str, api_key: str, name: str, body: dict[str, Any]) -> None:
    resp = httpx.put(f"{server_url}/api/aliases/{name}", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["fallbacks"] == body.get("fallbacks", [])


def test_fallback_chain_set_by_api(client: Any, server_url: str, api_key: str) -> None:
    body = {"target": "openai/error-500", "fallbacks": ["openai/error-503", "anthropic/claude-haiku-4-5"], "retries": 1}
    _alias(server_url, api_key, "smart", body)
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=ask("fall back please"))
    assert raw.parse().choices[0].message.content == "You said: fall back please"
    assert raw.headers["x-opentracy-model"] == "anthropic/claude-haiku-4-5"
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["provider"] == "anthropic" and row["resolved_model"] == "anthropic/claude-haiku-4-5"
    assert row["fallbacks"] == 2 and row["retries"] == 2
    assert attempts(row) == [
        ("openai/error-500", 500, "upstream_error"),
        ("openai/error-500", 500, "upstream_error"),
        ("openai/error-503", 503, "upstream_error"),
        ("openai/error-503", 503, "upstream_error"),
        ("anthropic/claude-haiku-4-5", 200, ""),
    ]


def test_context_length_error_falls_back_without_retrying(client: Any, server_url: str, api_key: str) -> None:
    _alias(server_url, api_key, "long", {"target": "openai/context", "fallbacks": ["openai/gpt-4.1"]})
    raw = client.chat.completions.with_raw_response.create(model="long", messages=ask())
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert attempts(row) == [("openai/context", 400, "context_length_exceeded"), ("openai/gpt-4.1", 200, "")]


def test_bad_request_does_not_fall_back(client: Any, server_url: str, api_key: str) -> None:
    _alias(server_url, api_key, "strict", {"target": "openai/error-400", "fallbacks": ["openai/gpt-4.1"]})
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="strict", messages=ask())
    assert len(read_trace(err.value.response.headers["x-opentracy-trace-id"])["attempts"]) == 1


def test_wrong_credentials_fall_back(client: Any, server_url: str, api_key: str) -> None:
    _alias(server_url, api_key, "safe", {"target": "openai/auth", "fallbacks": ["anthropic/claude-haiku-4-5"]})
    raw = client.chat.completions.with_raw_response.create(model="safe", messages=ask())
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert attempts(row)[0] == ("openai/auth", 401, "upstream_auth_error") and row["status"] == 200


def test_unconfigured_fallback_is_skipped(client: Any, server_url: str, api_key: str) -> None:
    _alias(server_url, api_key, "odd", {"target": "openai/error-500", "fallbacks": ["groq/llama-3.3-70b-versatile"]})
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="odd", messages=ask(), extra_headers={"x-opentracy-retries": "0"})
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert attempts(row)[-1] == ("groq/llama-3.3-70b-versatile", 400, "provider_not_configured")
    assert row["status"] == 502  # the caller sees the last upstream failure, not a config hint


def test_hung_upstream_times_out_then_falls_back(client: Any, server_url: str, api_key: str) -> None:
    _alias(server_url, api_key, "hung", {"target": "openai/slow", "fallbacks": ["openai/gpt-4.1"], "retries": 0})
    raw = client.chat.completions.with_raw_response.create(model="hung", messages=ask())
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert attempts(row) == [("openai/slow", 504, "upstream_timeout"), ("openai/gpt-4.1", 200, "")]


def test_garbage_upstream_is_502_and_traced(client: Any) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="openai/garbage", messages=ask())
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 502 and len(row["attempts"]) == 1  # a broken body is not transient


# ---------------------------------------------------------------- streaming


def test_stream_cut_before_content_falls_back(client: Any, server_url: str, api_key: str) -> None:
    _alias(server_url, api_key, "s", {"target": "openai/cut-early", "fallbacks": ["anthropic/claude-haiku-4-5"]})
    with client.chat.completions.with_streaming_response.create(
        model="s", messages=ask("stream me"), stream=True
    ) as resp:
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
        trace_id = resp.headers["x-opentracy-trace-id"]
    assert text == "You said: stream me"
    row = read_trace(trace_id)
    assert row["status"] == 200 and row["fallbacks"] == 1 and row["provider"] == "anthropic"
    assert [a[1] for a in attempts(row)][-1] == 200 and row["ttft_ms"] is not None


def test_stream_failing_before_content_is_retried(client: Any) -> None:
    stream = client.chat.completions.create(model="openai/flaky1-503", messages=ask("x y"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: x y"


@pytest.mark.parametrize("model, status", [("openai/gpt-cut", 502), ("openai/gpt-stall", 504)])
def test_stream_failing_after_content_ends_with_error_event(
    client: Any, server_url: str, api_key: str, model: str, status: int
) -> None:
    _alias(server_url, api_key, "late", {"target": model, "fallbacks": ["anthropic/claude-haiku-4-5"]})
    with httpx.stream(
        "POST",
        f"{server_url}/v1/chat/completions",
        json={"model": "late", "messages": ask("one two three four"), "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=20,
    ) as resp:
        body = resp.read().decode()
        trace_id = resp.headers["x-opentracy-trace-id"]
    assert '"error"' in body and "[DONE]" not in body and '"content":" said:"' in body
    row = read_trace(trace_id)
    assert row["status"] == status and row["fallbacks"] == 0  # content was sent: no switching mid-answer


# ---------------------------------------------------------------- cooldowns and load balancing


def _metric(server_url: str, name: str) -> float:
    """A sample's value on /metrics (0 when absent). Counters are process-wide, so tests compare
    before and after: other tests in the session (the engine's own calls too) trip cooldowns."""
    for line in httpx.get(f"{server_url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def test_cooldown_after_repeated_failures(client: Any, fake_openai: Any, settings: Any, server_url: str) -> None:
    trips = _metric(server_url, "opentracy_cooldowns_total")
    settings.OPENTRACY_COOLDOWN_FAILURES = 3
    settings.OPENTRACY_COOLDOWN_S = 60
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="openai/error-500", messages=ask(), extra_headers={"x-opentracy-retries": "0"}
            )
    before = len(fake_openai.requests)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="openai/error-500", messages=ask())
    assert err.value.status_code == 503 and err.value.code == "upstream_cooling_down"
    assert int(err.value.response.headers["retry-after"]) >= 59
    assert len(fake_openai.requests) == before  # the cooling target was not called
    # Other models of the same provider are unaffected.
    assert client.chat.completions.create(model="openai/gpt-4.1", messages=ask()).choices
    assert _metric(server_url, "opentracy_cooldowns_total") == trips + 1
    assert _metric(server_url, "opentracy_targets_cooling") >= 1  # others' cooldowns may end meanwhile


def test_weighted_load_balancing_and_pinning(client: Any, people: dict[str, Any], fake_openai: Any) -> None:
    from gateway.services import credential_set

    project = people["project"]
    base = f"{fake_openai.base_url}/v1"
    credential_set(project=project, provider="openai", api_key="sk-key-a", base_url=base, label="a", weight=3)
    credential_set(project=project, provider="openai", api_key="sk-key-b", base_url=base, label="b", weight=1)
    project.credentials.filter(provider="openai", label="default").delete()
    before = len(fake_openai.requests)

    async def burst() -> None:
        aclient = openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key, max_retries=0)
        await asyncio.gather(
            *(aclient.chat.completions.create(model="openai/gpt-4.1", messages=ask()) for _ in range(200))
        )
        await aclient.close()

    asyncio.run(burst())
    keys = [r["headers"]["Authorization"] for r in fake_openai.requests[before:]]
    share_a = keys.count("Bearer sk-key-a") / len(keys)
    assert len(keys) == 200 and 0.65 < share_a < 0.85, share_a
    before = len(fake_openai.requests)
    client.chat.completions.create(model="openai@b/gpt-4.1", messages=ask())
    assert fake_openai.requests[before]["headers"]["Authorization"] == "Bearer sk-key-b"
    with pytest.raises(openai.BadRequestError, match="labelled `zz`"):
        client.chat.completions.create(model="openai@zz/gpt-4.1", messages=ask())


def test_failing_credential_cools_down_and_traffic_moves_to_the_other(
    client: Any, people: dict[str, Any], fake_openai: Any, settings: Any
) -> None:
    from gateway.services import credential_set

    settings.OPENTRACY_COOLDOWN_FAILURES = 2
    project = people["project"]
    credential_set(
        project=project, provider="openai", api_key="sk-dead", base_url="http://127.0.0.1:9/v1", label="dead"
    )
    from gateway.failover import cooldowns

    # Credentials are drawn at random: in 10 requests the dead one was drawn fewer than twice about
    # once in a hundred runs (seen in CI), so send until it has cooled down, at most 60 (1 in 10^16).
    for _ in range(60):  # every request succeeds: a dead credential's failure is retried on another
        assert client.chat.completions.create(model="openai/gpt-4.1", messages=ask()).choices
        rows = {r["target"]: r for r in cooldowns(project.id)}
        if rows.get("openai@dead/gpt-4.1", {}).get("cooling_s", 0) > 0:
            break
    assert rows["openai@dead/gpt-4.1"]["cooling_s"] > 0


# ---------------------------------------------------------------- limits


def _limit(people: dict[str, Any], **values: Any) -> None:
    from gateway.models import ApiKey

    for field, value in values.items():
        if field.startswith("key_"):
            ApiKey.objects.filter(project=people["project"]).update(**{field[4:]: value})
        else:
            setattr(people["project"], field, value)
            people["project"].save()
    from gateway import cache

    cache.clear_all()


def test_requests_per_minute_per_key(client: Any, people: dict[str, Any]) -> None:
    _limit(people, key_rpm_limit=2)
    for _ in range(2):
        client.chat.completions.create(model="openai/gpt-4.1", messages=ask())
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="openai/gpt-4.1", messages=ask())
    assert err.value.code == "rate_limit_exceeded" and "2 requests per minute" in err.value.message
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 31
    row = read_trace(err.value.response.headers["x-opentracy-trace-id"])
    assert row["status"] == 429 and row["attempts"] == []


def test_tokens_per_minute_per_project(client: Any, people: dict[str, Any]) -> None:
    _limit(people, tpm_limit=10)
    client.chat.completions.create(model="openai/gpt-4.1", messages=ask("a b c d e f g h i j k l"))  # ~25 tokens
    time.sleep(0.2)  # the debit lands just after the answer
    with pytest.raises(openai.RateLimitError, match="10 tokens per minute"):
        client.chat.completions.create(model="openai/gpt-4.1", messages=ask())


def test_budget_per_period(client: Any, people: dict[str, Any]) -> None:
    from asgiref.sync import async_to_sync

    from gateway import limits

    # A UTC midnight between the first request and the second would start a new budget day, which
    # rightly admits the second one: start far enough from midnight for both to fall in one day.
    clear_of_midnight()
    spent, _ = async_to_sync(limits.spent)(people["project"].id, "day")
    _limit(people, budget_usd=round(spent, 2) + 0.01, budget_period="day")
    # gpt-4.1 at $2/MTok input: a 5,000-word prompt costs ~$0.01.
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4.1", messages=ask("word " * 5000))
    read_trace(raw.headers["x-opentracy-trace-id"])  # priced and counted by the writer
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="openai/gpt-4.1", messages=ask())
    assert err.value.code == "budget_exceeded" and "per day" in err.value.message


# ---------------------------------------------------------------- load and metrics


def test_200_parallel_streams_across_two_providers_one_failing(
    server_url: str, api_key: str, providers: Any, fake_openai: Any
) -> None:
    tag = f"load-{uuid.uuid4().hex[:8]}"

    async def one(i: int) -> tuple[int, str]:
        model = "openai/gpt-4.1" if i % 2 else "anthropic/claude-error-500"
        aclient = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key=api_key, max_retries=0, timeout=60)
        try:
            stream = await aclient.chat.completions.create(
                model=model,
                messages=ask(f"n{i}"),
                stream=True,
                extra_headers={"x-opentracy-tags": tag, "x-opentracy-retries": "0"},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return 200, text
        except openai.APIStatusError as exc:
            return exc.status_code, ""
        finally:
            await aclient.close()

    async def run() -> list[tuple[int, str]]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(run())
    assert all(text == f"You said: n{i}" for i, (s, text) in enumerate(results) if s == 200)
    assert sum(s == 200 for s, _ in results) == 100
    # The failing provider answers 502 until its cooldown trips, then 503 without being called.
    failed = [s for i, (s, _) in enumerate(results) if i % 2 == 0]
    assert set(failed) <= {502, 503} and failed.count(502) >= 5

    from opentracy_site import clickhouse
    from traces.writer import get_writer

    deadline = time.monotonic() + 20
    while True:
        get_writer().flush()
        _cols, rows = clickhouse.query(
            "SELECT provider, status, count() FROM traces WHERE has(tags, {t:String}) GROUP BY provider, status",
            {"t": tag},
        )
        if sum(r[2] for r in rows) >= 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expected = {("openai", 200): 100, **{("anthropic", st): failed.count(st) for st in set(failed)}}
    assert {(r[0], r[1]): r[2] for r in rows} == expected  # every request accounted for


def test_metrics_cover_traffic_and_reliability(client: Any, server_url: str) -> None:
    client.chat.completions.create(model="openai/flaky1-500", messages=ask())
    client.chat.completions.create(model="openai/gpt-4.1", messages=ask(), stream=True).close()
    text = httpx.get(f"{server_url}/metrics").text
    for name in (
        'opentracy_requests_total{endpoint="chat",model="openai/flaky1-500",provider="openai",status="200"}',
        "opentracy_retries_total",
        "opentracy_request_latency_seconds_bucket",
        "opentracy_ttft_seconds_bucket",
        'opentracy_upstream_attempts_total{model="flaky1-500",provider="openai",status="500"}',
        "opentracy_traces_queue_depth",
        "opentracy_traces_spilled_total",
        "opentracy_tokens_total",
    ):
        assert name in text, name
