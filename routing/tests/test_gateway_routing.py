"""Routing on the gateway: `model="auto"`, `router/<policy>` and router aliases pick the model per
prompt through the real engine (uvicorn, chDB, the MiniLM embedder) with the fake OpenAI upstream
behind it; the decision is checked in the response headers and in the trace the engine wrote."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from routing import cache as routing_cache
from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)

CHEAP, DEAR = "openai/router-cheap", "openai/router-dear"
FAILING = "openai/router-cheap-error-500"  # the fake upstream answers 500 for "error-500" models
# The shipped clusters these land in (checked against the MiniLM centroids: weight ~1.0 each).
EASY = "Sam buys 4 notebooks at $3 each and pays with a $20 bill. How much change does he get?"
HARD = "Which reagent converts an alkene to a vicinal diol with syn stereochemistry?"
CLUSTERS = ("code", "competition-math", "word-problems", "knowledge", "expert-science", "reading")


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


@pytest.fixture(autouse=True)
def _fresh_state() -> Any:
    from gateway import failover

    failover.reset()
    routing_cache.invalidate()
    yield
    failover.reset()
    routing_cache.invalidate()


def make_policy(project: Any, name: str, cheap: str = CHEAP, dear: str = DEAR, **fields: Any) -> Any:
    """Two priced candidates: `cheap` is right on everything but expert science (45 errors in 50),
    `dear` is wrong 5 times in 50 everywhere."""
    from gateway.models import ModelPrice
    from routing.models import ProfileCell, RoutingPolicy

    for model, inp, out in ((cheap, "0.10", "0.40"), (dear, "10", "30")):
        ModelPrice.objects.get_or_create(
            project=project, model=model, defaults={"input_per_mtok": Decimal(inp), "output_per_mtok": Decimal(out)}
        )
    policy = RoutingPolicy.objects.create(project=project, name=name, candidates=[cheap, dear], **fields)
    for slug in CLUSTERS:
        bad = 45 if slug == "expert-science" else 0
        ProfileCell.objects.create(
            policy=policy, cluster_key=f"prior:{slug}", model=cheap, source="traces", errors=bad, samples=50
        )
        ProfileCell.objects.create(
            policy=policy, cluster_key=f"prior:{slug}", model=dear, source="traces", errors=5, samples=50
        )
    return policy


@pytest.fixture
def policy(people: dict[str, Any]) -> Any:
    return make_policy(people["project"], "main", is_default=True)


@pytest.fixture
def api(server_url: str, api_key: str, providers: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20)


def predicted_header(value: str) -> dict[str, float]:
    return {m: float(v) for m, _, v in (part.rpartition("=") for part in value.split(","))}


# ---------------------------------------------------------------- model="auto"


def test_auto_sends_easy_prompts_to_the_cheap_model_and_hard_ones_to_the_dear_one(
    client: Any, policy: Any, fake_openai: Any
) -> None:
    easy = client.chat.completions.with_raw_response.create(model="auto", messages=ask(EASY))
    assert easy.parse().choices[0].message.content == f"You said: {EASY}"
    assert fake_openai.requests[-1]["body"]["model"] == "router-cheap"
    h = easy.headers
    assert (h["x-opentracy-route-policy"], h["x-opentracy-route-model"], h["x-opentracy-model"]) == (
        "main",
        CHEAP,
        CHEAP,
    )
    assert h["x-opentracy-route-cluster"] == "prior:word-problems" and float(h["x-opentracy-route-ms"]) > 0
    guess = predicted_header(h["x-opentracy-route-predicted"])
    assert set(guess) == {CHEAP, DEAR} and guess[CHEAP] < 0.05 < guess[DEAR]

    row = read_trace(h["x-opentracy-trace-id"])
    assert (row["requested_model"], row["resolved_model"], row["route_policy"]) == ("auto", CHEAP, "main")
    assert row["route_cluster"] == "prior:word-problems" and row["route_note"] == ""
    assert row["route_predicted"][CHEAP] == pytest.approx(guess[CHEAP], abs=1e-3)
    assert 0 < row["route_decision_ms"] <= row["overhead_ms"]

    hard = client.chat.completions.with_raw_response.create(model="auto", messages=ask(HARD))
    assert fake_openai.requests[-1]["body"]["model"] == "router-dear"
    assert hard.headers["x-opentracy-route-model"] == DEAR
    row = read_trace(hard.headers["x-opentracy-trace-id"])
    assert (row["resolved_model"], row["route_cluster"]) == (DEAR, "prior:expert-science")
    assert row["route_predicted"][CHEAP] > 0.5 > row["route_predicted"][DEAR]
    assert row["cost_total_usd"] > 0  # priced by the override the router priced it with


def test_the_trace_api_and_page_show_the_route(client: Any, api: httpx.Client, policy: Any, people: Any) -> None:
    from django.test import Client

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ask(HARD))
    trace_id = raw.headers["x-opentracy-trace-id"]
    read_trace(trace_id)
    detail = api.get(f"/api/traces/{trace_id}").json()
    assert (detail["route_policy"], detail["route_cluster"]) == ("main", "prior:expert-science")
    assert set(detail["route_predicted"]) == {CHEAP, DEAR} and detail["route_decision_ms"] > 0
    browser = Client()
    browser.force_login(people["owner"])
    page = browser.get(f"/projects/acme/traces/{trace_id}").content.decode()
    assert 'id="routing"' in page and "prior:expert-science" in page and DEAR in page


def test_streamed_routed_answers_carry_the_route_headers(client: Any, policy: Any) -> None:
    stream = client.chat.completions.create(model="auto", messages=ask(HARD), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"You said: {HARD}"
    headers = stream.response.headers
    assert headers["x-opentracy-route-model"] == DEAR and headers["x-opentracy-route-policy"] == "main"
    row = read_trace(headers["x-opentracy-trace-id"])
    assert row["stream"] is True and row["route_policy"] == "main" and row["resolved_model"] == DEAR


def test_builtin_policy_routes_auto_when_the_project_has_no_default(client: Any, people: dict[str, Any]) -> None:
    from routing import prior

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ask(EASY))
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["status"] == 200 and row["route_policy"] == "auto"
    assert row["resolved_model"] in prior.models() and row["route_cluster"] == "prior:word-problems"
    # Only providers the project can call are candidates (openai and anthropic are configured here).
    assert row["resolved_model"].split("/")[0] in ("openai", "anthropic")
    assert set(row["route_predicted"]) == set(prior.models())


def test_anthropic_messages_inbound_is_routed_too(server_url: str, api_key: str, providers: Any, policy: Any) -> None:
    reply = httpx.post(
        f"{server_url}/v1/messages",
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        json={"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": HARD}]},
        timeout=20,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"][0]["text"] == f"You said: {HARD}"
    assert reply.headers["x-opentracy-route-model"] == DEAR
    row = read_trace(reply.headers["x-opentracy-trace-id"])
    assert (row["endpoint"], row["route_policy"], row["resolved_model"]) == ("messages", "main", DEAR)


# ---------------------------------------------------------------- aliases and fallbacks


def test_an_alias_can_target_a_policy(client: Any, policy: Any, people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    alias_set(project=people["project"], name="smart", target="router/main", changed_by="test")
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=ask(EASY))
    assert raw.headers["x-opentracy-route-model"] == CHEAP
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert (row["alias"], row["route_policy"], row["resolved_model"]) == ("smart", "main", CHEAP)


def test_a_failing_choice_falls_back_to_the_next_best_candidate(client: Any, people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    make_policy(people["project"], "thrifty", cheap=FAILING)
    alias_set(project=people["project"], name="budget", target="router/thrifty", changed_by="test", retries=1)
    raw = client.chat.completions.with_raw_response.create(model="budget", messages=ask(EASY))
    assert raw.parse().choices[0].message.content == f"You said: {EASY}"
    assert raw.headers["x-opentracy-route-model"] == FAILING and raw.headers["x-opentracy-model"] == DEAR
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    got = [(a["target"], a["status"]) for a in row["attempts"]]
    assert got == [(FAILING, 500), (FAILING, 500), (DEAR, 200)]  # the alias's budget: 1 retry per target
    assert (row["retries"], row["fallbacks"], row["resolved_model"], row["route_policy"]) == (1, 1, DEAR, "thrifty")


def test_alias_fallbacks_come_after_the_policys_candidates(api: httpx.Client, people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    make_policy(people["project"], "shaky", cheap=FAILING, dear="openai/router-dear-error-500")
    alias_set(
        project=people["project"],
        name="careful",
        target="router/shaky",
        fallbacks=["openai/gpt-4o-mini"],
        retries=0,
        changed_by="test",
    )
    reply = api.post("/v1/chat/completions", json={"model": "careful", "messages": ask(EASY)})
    assert reply.status_code == 200, reply.text
    row = read_trace(reply.headers["x-opentracy-trace-id"])
    assert [a["target"] for a in row["attempts"]] == [FAILING, "openai/router-dear-error-500", "openai/gpt-4o-mini"]
    assert row["resolved_model"] == "openai/gpt-4o-mini" and row["fallbacks"] == 2


# ---------------------------------------------------------------- bad input


def test_no_reachable_candidate_is_a_503_naming_the_policy(client: Any, people: dict[str, Any]) -> None:
    from routing.models import RoutingPolicy

    RoutingPolicy.objects.create(project=people["project"], name="lonely", candidates=["openai@nowhere/router-dear"])
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="router/lonely", messages=ask(EASY))
    assert err.value.status_code == 503
    body: Any = err.value.body
    assert body["code"] == "no_route" and body["type"] == "server_error"
    assert "`lonely`" in body["message"] and "provider not configured" in body["message"]
    headers = err.value.response.headers
    assert headers["x-opentracy-route-policy"] == "lonely"
    row = read_trace(headers["x-opentracy-trace-id"])
    assert (row["status"], row["error_class"], row["route_policy"]) == (503, "no_route", "lonely")


def test_a_prompt_without_text_is_a_400(client: Any, policy: Any, api: httpx.Client) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "   "}])
    body: Any = err.value.body
    assert body["param"] == "messages" and "prompt" in body["message"]
    image_only = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
    ]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=image_only)
    reply = api.post("/v1/route", json={"model": "auto", "prompt": ""})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"


def test_a_prompt_past_the_embedders_window_is_routed_and_the_trace_says_so(client: Any, policy: Any) -> None:
    long = " ".join(f"{EASY} (variant {i})" for i in range(40))  # ~1,000 tokens, the window is 256
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ask(long))
    assert raw.parse().choices[0].message.content.startswith("You said:")
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["route_policy"] == "main" and "truncated" in row["route_note"] and "256" in row["route_note"]


def test_a_policy_without_profile_data_uses_its_default_model(client: Any, people: dict[str, Any]) -> None:
    from routing.models import RoutingPolicy

    RoutingPolicy.objects.create(
        project=people["project"],
        name="fresh",
        candidates=["openai/router-new-a", "openai/router-new-b"],
        default_model="openai/router-new-b",
    )
    raw = client.chat.completions.with_raw_response.create(model="router/fresh", messages=ask(HARD))
    assert raw.headers["x-opentracy-model"] == "openai/router-new-b"
    row = read_trace(raw.headers["x-opentracy-trace-id"])
    assert row["resolved_model"] == "openai/router-new-b"
    assert "no profile data" in row["route_note"] and "default model openai/router-new-b" in row["route_note"]


# ---------------------------------------------------------------- POST /v1/route


def test_route_answers_the_decision_without_calling_a_model(api: httpx.Client, policy: Any, fake_openai: Any) -> None:
    before = len(fake_openai.requests)
    reply = api.post("/v1/route", json={"model": "auto", "prompt": HARD})
    assert reply.status_code == 200, reply.text
    decision = reply.json()
    assert (decision["policy"], decision["model"], decision["order"]) == ("main", DEAR, [DEAR, CHEAP])
    assert decision["cluster"]["key"] == "prior:expert-science" and decision["cluster"]["weight"] > 0.5
    assert decision["predicted_error"][CHEAP] > decision["predicted_error"][DEAR]
    assert decision["cost_usd"][DEAR] > decision["cost_usd"][CHEAP] > 0
    assert decision["prompt_tokens"] > 0 and decision["decision_ms"] > 0
    assert reply.headers["x-opentracy-route-model"] == DEAR

    chat_form = api.post("/v1/route", json={"model": "router/main", "messages": ask(EASY), "tools": []})
    assert chat_form.status_code == 200 and chat_form.json()["model"] == CHEAP
    assert len(fake_openai.requests) == before  # nothing was called


def test_route_errors_are_openai_shaped(api: httpx.Client, policy: Any) -> None:
    unknown = api.post("/v1/route", json={"model": "router/nope", "prompt": EASY})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "policy_not_found" and "`nope`" in unknown.json()["error"]["message"]
    plain = api.post("/v1/route", json={"model": "openai/gpt-4o", "prompt": EASY})
    assert plain.status_code == 404 and plain.json()["error"]["param"] == "model"
    broken = api.post("/v1/route", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and set(broken.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.post(f"{api.base_url}/v1/route", json={"prompt": EASY}).status_code == 401


def test_policy_changes_take_effect_at_once(api: httpx.Client, policy: Any) -> None:
    assert api.post("/v1/route", json={"prompt": HARD}).json()["model"] == DEAR
    policy.lam = 50.0  # cost now outweighs any error difference
    policy.save()
    assert api.post("/v1/route", json={"prompt": HARD}).json()["model"] == CHEAP


def test_max_latency_skips_candidates_slow_in_the_last_day(api: httpx.Client, policy: Any, people: Any) -> None:
    import time

    from traces.writer import get_writer

    for _ in range(3):
        get_writer().submit(
            {
                "trace_id": str(uuid.uuid4()),
                "timestamp": time.time(),
                "project_id": people["project"].id,
                "resolved_model": DEAR,
                "provider": "openai",
                "latency_ms": 4000.0,
            }
        )
    get_writer().flush()
    policy.max_latency_ms = 1000
    policy.save()
    decision = api.post("/v1/route", json={"prompt": HARD}).json()
    assert decision["model"] == CHEAP and decision["skipped"] == {DEAR: "p50 latency 4000 ms > 1000 ms"}


# ---------------------------------------------------------------- isolation and the hot path


def test_outsiders_cannot_use_another_projects_policy(
    server_url: str, outsider_key: str, api: httpx.Client, policy: Any, people: dict[str, Any]
) -> None:
    outsider = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {outsider_key}"}, timeout=20)
    assert outsider.post("/v1/route", json={"model": "router/main", "prompt": EASY}).status_code == 404
    chat = outsider.post("/v1/chat/completions", json={"model": "router/main", "messages": ask(EASY)})
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "policy_not_found"
    refused = outsider.put("/api/aliases/sneaky", json={"target": "router/main"})
    assert refused.status_code == 400 and "no routing policy" in refused.json()["detail"]
    # The owner's alias to their own policy is accepted; to a policy that does not exist, refused.
    assert api.put("/api/aliases/smart", json={"target": "router/main"}).status_code == 200
    assert api.put("/api/aliases/smart", json={"target": "router/missing"}).status_code == 400
    fallback = api.put("/api/aliases/smart", json={"target": "openai/gpt-4o", "fallbacks": ["router/main"]})
    assert fallback.status_code == 400


def test_a_warm_decision_makes_no_database_call(
    people: dict[str, Any], providers: Any, policy: Any, django_db_blocker: Any
) -> None:
    from routing.gateway import decide_request

    project_id = people["project"].id
    body = {"model": "auto", "messages": ask(EASY)}
    assert asyncio.run(decide_request(project_id, body, None)).chosen == CHEAP
    with django_db_blocker.block():  # any query now raises
        warm = asyncio.run(decide_request(project_id, {"model": "auto", "messages": ask(HARD)}, None))
    assert warm.chosen == DEAR and warm.decision_ms < 1000
