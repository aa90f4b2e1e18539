"""The routing policies API: create, read (profile grid, curve, traffic, savings), change, delete;
validation errors in DRF's shape with their messages; one default per project; another project's
policy and profile run are 404 on every endpoint, by session and by API key."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from django.test import Client

from datasets import embedding_cache
from datasets.models import ClusteringRun
from gateway.models import Project
from gateway.providers.local_embed import EMBED_MODEL
from routing import embedder, prior, profile_runs, selectors
from routing.models import ProfileCell, ProfileRun, RoutingPolicy
from routing.router import LAMBDAS, compile_policy, curve
from routing.services import policy_create
from tests.support import read_trace

from .policy_support import CHEAP, DEAR, PRICES, logged_in, routed, set_prices, student, unique, write

pytestmark = pytest.mark.django_db(transaction=True)
JSON = "application/json"
_PIDS = itertools.count(930_001, 10)  # far from the fixtures' ids and traces/tests' (900_001...)


def _create(client: Client, **body: Any) -> Any:
    return client.post("/api/routing/policies", {"candidates": [DEAR, CHEAP], **body}, content_type=JSON)


def test_create_read_update_delete(people: dict[str, Any]) -> None:
    owner = logged_in(people["owner"])
    created = _create(owner, name="support", candidates=["openai/gpt-4o", "gpt-4o-mini"], lam=0.2)
    assert created.status_code == 201, created.json()
    data = created.json()
    # A bare model name is stored as the provider/model the gateway resolves it to.
    assert data["candidates"] == [DEAR, CHEAP] and data["alias_target"] == "router/support"
    assert data["lam"] == 0.2 and data["is_default"] is False and data["clustering_run"] is None
    policy = RoutingPolicy.objects.get(pk=data["id"])
    assert policy.project == people["project"] and policy.created_by == people["owner"]

    # The profile grid: the shipped clusters × the candidates, each cell with its interval.
    grid = data["profile"]
    assert grid["models"] == [DEAR, CHEAP]
    assert [r["key"] for r in grid["rows"]] == [c.key for c in prior.clusters()]
    cell = grid["rows"][0]["cells"][DEAR]
    assert cell["samples"] == 0 and 0 < cell["low"] <= cell["error"] <= cell["high"] < 1
    # gpt-4o is better than gpt-4o-mini on every shipped cluster the prior has both for.
    assert all(r["cells"][DEAR]["error"] <= r["cells"][CHEAP]["error"] for r in grid["rows"])

    # The curve: one point per standard λ (0.2 is one), the current one marked, the dearest baseline.
    curve = data["curve"]
    assert [p["lam"] for p in curve["points"]] == sorted(LAMBDAS)
    assert curve["current"]["lam"] == 0.2 and curve["baseline"]["model"] == DEAR
    best, cheapest = curve["points"][0], curve["points"][-1]
    assert best["error"] <= cheapest["error"] and best["cost_usd"] >= cheapest["cost_usd"]
    assert cheapest["shares"] == {CHEAP: 1.0}
    assert curve["sample"]["source"] in ("traffic", "centroids") and curve["sample"]["prompts"] > 0

    listed = owner.get("/api/routing/policies").json()["data"]
    assert [p["name"] for p in listed] == ["support"]

    changed = owner.patch(f"/api/routing/policies/{policy.pk}", {"lam": 0.37, "max_latency_ms": 800},
                          content_type=JSON)  # fmt: skip
    assert changed.status_code == 200, changed.json()
    after = changed.json()
    assert after["lam"] == 0.37 and after["max_latency_ms"] == 800 and after["candidates"] == [DEAR, CHEAP]
    # An off-grid λ gets its own point on the curve, between its neighbours.
    assert after["curve"]["current"]["lam"] == 0.37
    assert 0.37 in [p["lam"] for p in after["curve"]["points"]]

    got = owner.get(f"/api/routing/policies/{policy.pk}")
    assert got.status_code == 200 and got.json()["lam"] == 0.37

    gone = owner.delete(f"/api/routing/policies/{policy.pk}")
    assert gone.status_code == 204 and not RoutingPolicy.objects.filter(pk=policy.pk).exists()
    assert owner.get(f"/api/routing/policies/{policy.pk}").status_code == 404


def test_learned_cells_show_in_the_profile(people: dict[str, Any]) -> None:
    owner = logged_in(people["owner"])
    policy_id = _create(owner, name="learned").json()["id"]
    ProfileCell.objects.create(policy_id=policy_id, cluster_key="prior:code", model=CHEAP, source="profile_run",
                               errors=18, samples=20)  # fmt: skip
    rows = owner.get(f"/api/routing/policies/{policy_id}").json()["profile"]["rows"]
    code = next(r for r in rows if r["key"] == "prior:code")["cells"][CHEAP]
    # 18 of 20 wrong pulls the cell far above its prior, its interval narrowing around the evidence.
    assert code["samples"] == 20 and code["errors"] == 18 and code["error"] > 0.6
    assert code["low"] < code["error"] < code["high"]


def test_bad_input_gets_a_400_naming_the_field(people: dict[str, Any]) -> None:
    owner = logged_in(people["owner"])
    project = people["project"]
    assert _create(owner, name="taken").status_code == 201
    running = ClusteringRun.objects.create(project=project, status=ClusteringRun.Status.RUNNING)
    theirs = ClusteringRun.objects.create(project=people["other_project"], status=ClusteringRun.Status.DONE)
    student(people, "smollm2-135m-instruct-v1")  # ours; a name nobody approved is refused
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"candidates": [DEAR]}, "name", "required"),
        ({"name": "x"}, "candidates", "required"),
        ({"name": "Has Spaces"}, "name", "A slug"),
        ({"name": "auto"}, "name", "built-in policy"),
        ({"name": "taken"}, "name", "already has a policy named 'taken'"),
        ({"name": "x", "candidates": []}, "candidates", "from 1 to 20"),
        ({"name": "x", "candidates": "openai/gpt-4o"}, "candidates", "A list of model names"),
        ({"name": "x", "candidates": ["nope/model"]}, "candidates", "'nope/model' is not a known model"),
        ({"name": "x", "candidates": [DEAR, "gpt-4o"]}, "candidates", "'openai/gpt-4o' is listed twice"),
        ({"name": "x", "candidates": [f"openai/m{i}" for i in range(21)]}, "candidates", "from 1 to 20"),
        (
            {"name": "x", "candidates": ["local/someone-else-v1"]},
            "candidates",
            "nor a distilled student of this project",
        ),
        ({"name": "x", "candidates": ["local/all-minilm-l6-v2"]}, "candidates", "embedding model"),
        ({"name": "x", "lam": -0.1}, "lam", "λ must be 0 or more"),
        ({"name": "x", "lam": "lots"}, "lam", "is not a number"),
        ({"name": "x", "lam": True}, "lam", "A number is required"),
        ({"name": "x", "temperature": 0}, "temperature", "greater than 0"),
        ({"name": "x", "shrinkage": -1}, "shrinkage", "0 or more"),
        ({"name": "x", "max_latency_ms": 0}, "max_latency_ms", "at least 1"),
        ({"name": "x", "expected_output_tokens": 2.5}, "expected_output_tokens", "whole number"),
        ({"name": "x", "required_capabilities": ["tools", "teleport"]}, "required_capabilities", "Unknown: teleport"),
        ({"name": "x", "clustering_run": theirs.pk}, "clustering_run", "No such clustering run in this project"),
        ({"name": "x", "clustering_run": running.pk}, "clustering_run", "is running; only a finished run"),
        ({"name": "x", "default_model": "openai/gpt-4.1"}, "default_model", "is not one of the candidates"),
        ({"name": "x", "is_default": "maybe"}, "is_default", "true or false"),
        ({"name": "x", "colour": "blue"}, "non_field_errors", "Unknown fields: colour"),
    ]
    for body, field, message in cases:
        payload = body if "candidates" in body or field == "candidates" else {"candidates": [DEAR], **body}
        got = owner.post("/api/routing/policies", payload, content_type=JSON)
        assert got.status_code == 400, (body, got.json())
        errors = got.json()
        assert field in errors and any(message in m for m in errors[field]), (body, errors)
    listed = owner.post("/api/routing/policies", [DEAR], content_type=JSON)
    assert listed.status_code == 400 and "JSON object" in listed.json()["detail"][0]
    assert list(RoutingPolicy.objects.values_list("name", flat=True)) == ["taken"]

    # The same checks guard a change; nothing is saved when one fails.
    pk = RoutingPolicy.objects.get(name="taken").pk
    bad = owner.patch(f"/api/routing/policies/{pk}", {"lam": 1, "candidates": [DEAR, DEAR]}, content_type=JSON)
    assert bad.status_code == 400 and "listed twice" in bad.json()["candidates"][0]
    assert RoutingPolicy.objects.get(pk=pk).lam == 0.1
    dropped = owner.patch(f"/api/routing/policies/{pk}", {"default_model": CHEAP, "candidates": [DEAR]},
                          content_type=JSON)  # fmt: skip
    assert dropped.status_code == 400 and "not one of the candidates" in dropped.json()["default_model"][0]


def test_good_optional_fields_are_kept(people: dict[str, Any]) -> None:
    owner = logged_in(people["owner"])
    run = ClusteringRun.objects.create(project=people["project"], status=ClusteringRun.Status.DONE)
    student(people, "smollm2-135m-instruct-v7")
    body = {
        "name": "tuned", "candidates": [DEAR, "local/smollm2-135m-instruct-v7"], "lam": 0,
        "default_model": DEAR, "required_capabilities": ["vision", "tools"], "min_context_tokens": 4000,
        "temperature": 0.1, "shrinkage": 0, "expected_output_tokens": 50, "clustering_run": run.pk,
    }  # fmt: skip
    got = _create(owner, **body)
    assert got.status_code == 201, got.json()
    data = got.json()
    assert data["candidates"] == [DEAR, "local/smollm2-135m-instruct-v7"] and data["default_model"] == DEAR
    assert data["required_capabilities"] == ["tools", "vision"] and data["clustering_run"] == run.pk
    assert (data["lam"], data["temperature"], data["shrinkage"]) == (0, 0.1, 0)
    # A run without clusters routes on the shipped ones rather than not at all (router._clusters).
    assert data["clusters"] == {"source": "clustering_run", "count": len(prior.clusters())}
    cleared = logged_in(people["owner"]).patch(
        f"/api/routing/policies/{data['id']}", {"clustering_run": None, "default_model": ""}, content_type=JSON
    )
    assert cleared.status_code == 200 and cleared.json()["clustering_run"] is None
    assert cleared.json()["default_model"] == "" and cleared.json()["clusters"]["source"] == "prior"


def test_one_default_per_project(people: dict[str, Any], outsider_key: str) -> None:
    owner = logged_in(people["owner"])
    theirs = Client().post("/api/routing/policies", {"name": "theirs", "candidates": [DEAR], "is_default": True},
                           content_type=JSON, HTTP_AUTHORIZATION=f"Bearer {outsider_key}")  # fmt: skip
    assert theirs.status_code == 201
    a = _create(owner, name="a", is_default=True).json()["id"]
    b = _create(owner, name="b", is_default=True).json()["id"]
    defaults = RoutingPolicy.objects.filter(is_default=True)
    assert {(p.project.slug, p.name) for p in defaults} == {("acme", "b"), ("other", "theirs")}
    owner.patch(f"/api/routing/policies/{a}", {"is_default": True}, content_type=JSON)
    assert set(RoutingPolicy.objects.filter(is_default=True).values_list("name", flat=True)) == {"a", "theirs"}
    owner.patch(f"/api/routing/policies/{a}", {"is_default": False}, content_type=JSON)
    assert not RoutingPolicy.objects.filter(project=people["project"], is_default=True).exists()
    assert RoutingPolicy.objects.get(pk=b).is_default is False


def test_traffic_and_savings_from_routed_traces(people: dict[str, Any]) -> None:
    project = people["project"]
    set_prices(project)
    owner = logged_in(people["owner"])
    name = unique("savings")
    pk = _create(owner, name=name).json()["id"]
    # Priced by the trace writer from the overrides (cost None on a 200), as the gateway's traces are.
    records = [
        routed(project.id, name, CHEAP, hours_ago=2, cost=None, prompt_tokens=1000, completion_tokens=100),
        routed(project.id, name, CHEAP, hours_ago=1, cost=None, prompt_tokens=2000, completion_tokens=300),
        routed(project.id, name, DEAR, hours_ago=1, cost=None, prompt_tokens=500, completion_tokens=50),
        routed(project.id, name, "openai/unpriced-model", hours_ago=0, cost=None),  # no price: left out
        routed(project.id, name, CHEAP, hours_ago=0, status=502, cost=None),  # failed: traffic, no cost
        routed(project.id, "someone-else", CHEAP, hours_ago=0, cost=None),  # another policy
        routed(people["other_project"].id, name, CHEAP, hours_ago=0, cost=None),  # another project
    ]
    write(records)
    asked = datetime.now(UTC)
    detail = owner.get(f"/api/routing/policies/{pk}").json()
    answered = datetime.now(UTC)

    traffic = detail["traffic"]
    assert traffic["requests"] == 5 and len(traffic["t"]) == 7 * 24
    # The last point is the hour of the request, and each trace counts in the hour of its own
    # timestamp (an hour may turn between writing the traces and reading them back).
    assert int(asked.timestamp()) // 3600 * 3600 <= traffic["t"][-1] <= int(answered.timestamp()) // 3600 * 3600
    expected: dict[str, list[int]] = {}
    for r in records:
        if r["project_id"] == project.id and r["route_policy"] == name:
            series = expected.setdefault(r["resolved_model"], [0] * len(traffic["t"]))
            series[traffic["t"].index(int(r["timestamp"]) // 3600 * 3600)] += 1
    assert traffic["series"] == expected
    assert sum(traffic["series"][CHEAP]) == 3 and sum(traffic["series"][DEAR]) == 1
    assert traffic["shares"] == {CHEAP: 0.6, DEAR: 0.2, "openai/unpriced-model": 0.2}

    def usd(model: str, pt: int, ct: int) -> float:
        inp, out = PRICES[model]
        return float((pt * inp + ct * out) / 1_000_000)

    savings = detail["savings"]
    actual = usd(CHEAP, 1000, 100) + usd(CHEAP, 2000, 300) + usd(DEAR, 500, 50)
    dearest = usd(DEAR, 1000, 100) + usd(DEAR, 2000, 300) + usd(DEAR, 500, 50)
    assert savings["dearest_model"] == DEAR and savings["requests"] == 4 and savings["unpriced"] == 1
    assert savings["actual_usd"] == pytest.approx(actual, rel=1e-6)
    assert savings["dearest_usd"] == pytest.approx(dearest, rel=1e-6)
    assert savings["saved_usd"] == pytest.approx(dearest - actual, rel=1e-6)
    assert savings["saved_fraction"] == pytest.approx(1 - actual / dearest, abs=1e-4)
    # The override prices are what the curve costs candidates at too.
    assert detail["prices"][DEAR] == {"input_per_1k": 0.0025, "output_per_1k": 0.01}


def test_the_overview_tile_adds_up_routing_and_distillation_savings(people: dict[str, Any]) -> None:
    project = people["project"]
    set_prices(project)
    owner = logged_in(people["owner"])
    name = unique("saved")
    _create(owner, name=name)
    bot = student(people, unique("bot"))  # its job's teacher is DEAR
    # Far in the past, in a window of their own: chDB outlives each test's database.
    local = routed(project.id, "", f"local/{bot.name}", hours_ago=500, prompt_tokens=2000, completion_tokens=200)
    local.update(provider="local", cost_total_usd=None, route_policy="")
    write(
        [
            routed(project.id, name, CHEAP, hours_ago=500, cost=None, prompt_tokens=1000, completion_tokens=100),
            routed(project.id, name, DEAR, hours_ago=500, cost=None, prompt_tokens=500, completion_tokens=50),
            local,
        ]
    )

    def usd(model: str, pt: int, ct: int) -> float:
        inp, out = PRICES[model]
        return float((pt * inp + ct * out) / 1_000_000)

    now = datetime.now(UTC)
    saved = selectors.saved_in_window(project.id, now - timedelta(hours=510), now - timedelta(hours=490))
    routing = usd(DEAR, 1500, 150) - usd(CHEAP, 1000, 100) - usd(DEAR, 500, 50)
    assert saved["routing_usd"] == pytest.approx(routing, abs=1e-6)
    assert saved["distillation_usd"] == pytest.approx(usd(DEAR, 2000, 200), abs=1e-6)
    assert saved["total_usd"] == pytest.approx(saved["routing_usd"] + saved["distillation_usd"], abs=1e-6)
    assert saved["active"]
    # On the overview: a tile loaded after the page, for the page's window; outsiders get nothing.
    page = owner.get("/projects/acme/overview", {"range": "24h"}).content.decode()
    assert 'hx-get="/projects/acme/overview/saved?range=24h"' in page
    tile = owner.get(
        "/projects/acme/overview/saved",
        {
            "range": "custom",
            "since": f"{now - timedelta(hours=510):%Y-%m-%dT%H:%M:%SZ}",
            "until": f"{now - timedelta(hours=490):%Y-%m-%dT%H:%M:%SZ}",
        },
    ).content.decode()
    assert f'data-value="{saved["total_usd"]}"' in tile and "routing $" in tile
    assert logged_in(people["outsider"]).get("/projects/acme/overview/saved").status_code == 404


def test_profile_runs(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    enqueued: list[int] = []
    monkeypatch.setattr(profile_runs, "_enqueue", enqueued.append)  # the task itself: routing/tests of the learner
    owner = logged_in(people["owner"])
    pk = _create(owner, name="profiled").json()["id"]
    draft = owner.post(f"/api/routing/policies/{pk}/profile", {"per_cluster": 2, "judge": DEAR, "start": False},
                       content_type=JSON)  # fmt: skip
    assert draft.status_code == 201, draft.json()
    run = draft.json()
    assert run["status"] == "draft" and run["policy"] == pk and run["per_cluster"] == 2
    assert set(run["estimate"]) >= {"calls", "cost_usd", "prompts"} and run["estimate"]["calls"] > 0
    got = owner.get(f"/api/routing/profile-runs/{run['id']}")
    assert got.status_code == 200 and got.json()["estimate"] == run["estimate"]
    assert [r["id"] for r in owner.get(f"/api/routing/policies/{pk}").json()["profile_runs"]] == [run["id"]]

    bad = owner.post(f"/api/routing/policies/{pk}/profile", {"per_cluster": "many", "judge": DEAR},
                     content_type=JSON)  # fmt: skip
    assert bad.status_code == 400 and "per_cluster" in bad.json()
    no_judge = owner.post(f"/api/routing/policies/{pk}/profile", {"start": False}, content_type=JSON)
    assert no_judge.status_code == 400 and "judge" in no_judge.json()

    # The estimate counts the shipped clusters' first two examples, each to both candidates.
    assert run["estimate"]["prompts"] == 2 * len(prior.clusters()) and run["estimate"]["calls"] == 2 * 2 * 2 * len(
        prior.clusters()
    )
    assert enqueued == []
    started = owner.post(f"/api/routing/profile-runs/{run['id']}/start")
    assert started.status_code == 200 and started.json()["status"] == "queued" and enqueued == [run["id"]]
    again = owner.post(f"/api/routing/profile-runs/{run['id']}/start")
    assert again.status_code == 400 and "only a draft can be started" in again.json()["detail"][0]
    cancelled = owner.post(f"/api/routing/profile-runs/{run['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert ProfileRun.objects.get(pk=run["id"]).status == "cancelled"
    twice = owner.post(f"/api/routing/profile-runs/{run['id']}/cancel")
    assert twice.status_code == 400 and "already finished" in twice.json()["detail"][0]

    queued = owner.post(f"/api/routing/policies/{pk}/profile", {"judge": DEAR}, content_type=JSON)
    assert queued.status_code == 201 and queued.json()["status"] == "queued" and queued.json()["per_cluster"] == 10
    assert enqueued == [run["id"], queued.json()["id"]]


def test_outsider_gets_404_everywhere(people: dict[str, Any], outsider_key: str) -> None:
    owner = logged_in(people["owner"])
    pk = _create(owner, name="private").json()["id"]
    run = ProfileRun.objects.create(policy_id=pk, status=ProfileRun.Status.DRAFT, judge=DEAR)
    outsider = logged_in(people["outsider"])
    keyed = Client(HTTP_AUTHORIZATION=f"Bearer {outsider_key}")
    calls = [
        ("get", f"/api/routing/policies/{pk}", None),
        ("patch", f"/api/routing/policies/{pk}", {"lam": 5}),
        ("delete", f"/api/routing/policies/{pk}", None),
        ("post", f"/api/routing/policies/{pk}/profile", {"judge": DEAR, "start": False}),
        ("get", f"/api/routing/profile-runs/{run.pk}", None),
        ("post", f"/api/routing/profile-runs/{run.pk}/start", None),
        ("post", f"/api/routing/profile-runs/{run.pk}/cancel", None),
    ]
    for client in (outsider, keyed):
        for method, url, body in calls:
            got = getattr(client, method)(url, body, content_type=JSON) if body else getattr(client, method)(url)
            assert got.status_code == 404, (method, url, got.status_code)
            # A session naming the project it does not belong to is refused the same way.
            named = getattr(client, method)(f"{url}?project=acme")
            assert named.status_code == 404, (method, url)
        assert client.get("/api/routing/policies").json()["data"] == []
    assert outsider.get("/api/routing/policies?project=acme").status_code == 404
    anonymous = Client()
    assert anonymous.get("/api/routing/policies").status_code in (401, 403)
    assert anonymous.get(f"/api/routing/policies/{pk}").status_code in (401, 403)
    policy = RoutingPolicy.objects.get(pk=pk)
    assert policy.lam == 0.1 and ProfileRun.objects.get(pk=run.pk).status == "draft"


def test_an_api_key_acts_on_its_own_project(people: dict[str, Any], api_key: str) -> None:
    keyed = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    made = keyed.post("/api/routing/policies", {"name": "by-key", "candidates": [CHEAP]}, content_type=JSON)
    assert made.status_code == 201, made.json()
    policy = RoutingPolicy.objects.get(pk=made.json()["id"])
    assert policy.project == people["project"] and policy.created_by is None
    # A key's project wins over ?project=: it cannot reach another project by naming it.
    assert keyed.get("/api/routing/policies?project=other").json()["data"][0]["name"] == "by-key"
    member = logged_in(people["member"])
    assert member.get(f"/api/routing/policies/{policy.pk}?project=acme").status_code == 200
    edited = member.patch(f"/api/routing/policies/{policy.pk}?project=acme", {"lam": 2}, content_type=JSON)
    assert edited.status_code == 200 and edited.json()["lam"] == 2
    revoked = Client(HTTP_AUTHORIZATION="Bearer ot-not-a-real-key")
    assert revoked.get("/api/routing/policies").status_code == 401


def test_the_curve_is_predicted_on_recent_traffic(people: dict[str, Any]) -> None:
    """Cached vectors of the project's recent prompts are the sample (the router's own text, the
    last user message); prompts nobody embedded yet are left out, never embedded by a page read."""
    # A project id of its own: chDB outlives the test database, whose ids SQLite may reuse.
    project = Project.objects.create(pk=next(_PIDS), slug=unique("traffic"), name="Traffic")
    policy = policy_create(project=project, user=None, data={"name": "t", "candidates": [DEAR, CHEAP]})
    code = ["Write a Python function that reverses a linked list.", "Fix this SQL: SELEC * FROM users;"]
    maths = ["Evaluate the integral of x^2 from 0 to 3."]
    cold = "A prompt nobody has embedded yet."
    write([routed(project.id, "", DEAR, prompt=p, prompt_tokens=t)
           for p, t in [(code[0], 100), (code[0], 200), (code[1], 300), (maths[0], 400), (cold, 500)]])  # fmt: skip
    empty = selectors.policy_detail(policy)["curve"]["sample"]
    assert empty == {"traces": 5, "mean_prompt_tokens": 300.0, "source": "centroids", "prompts": len(prior.clusters())}
    cached = [*code, *maths]
    hashes = [embedding_cache.content_hash(t) for t in cached]
    embedding_cache.store(hashes, embedder.embed_many(cached), EMBED_MODEL)

    detail = selectors.policy_detail(policy)
    sample = detail["curve"]["sample"]
    assert sample == {"traces": 5, "mean_prompt_tokens": 300.0, "source": "traffic", "prompts": 4}
    # At λ = 0 each prompt goes to its lower-error model; the mean error is over the 4 prompts (the
    # repeated one twice), as routing.router.curve computes it from the same vectors.
    compiled = compile_policy(policy)
    vectors = embedder.embed_many([code[0], code[0], code[1], maths[0]])
    expected = curve(compiled, vectors, 300.0, (0.0,))["points"][0]
    best = detail["curve"]["points"][0]
    assert best["lam"] == 0 and best["error"] == pytest.approx(expected["error"], abs=1e-4)
    assert best["cost_usd"] == pytest.approx(expected["cost_usd"])


def test_the_openapi_schema_describes_the_routing_api(people: dict[str, Any]) -> None:
    schema = yaml.safe_load(logged_in(people["owner"]).get("/api/schema/").content)
    paths = schema["paths"]
    assert {"/api/routing/policies", "/api/routing/policies/{id}", "/api/routing/policies/{id}/profile",
            "/api/routing/profile-runs/{id}", "/api/routing/profile-runs/{id}/start",
            "/api/routing/profile-runs/{id}/cancel"} <= set(paths)  # fmt: skip
    assert {"get", "patch", "delete"} <= set(paths["/api/routing/policies/{id}"])
    body = paths["/api/routing/policies"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/PolicyBody")


def test_a_policy_made_through_the_api_routes_live_traffic(client: Any, server_url: str, api_key: str) -> None:
    """Created, made the default and changed over the API: the engine's next `model="auto"` call
    follows each change, and the policy's traffic counts what it routed."""
    api = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20)
    name = unique("live")
    made = api.post("/api/routing/policies", json={"name": name, "candidates": ["openai/router-cheap"],
                                                   "is_default": True})  # fmt: skip
    assert made.status_code == 201, made.text
    ask = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    first = client.chat.completions.with_raw_response.create(model="auto", messages=ask)
    assert first.headers["x-opentracy-route-policy"] == name
    assert first.headers["x-opentracy-route-model"] == first.headers["x-opentracy-model"] == "openai/router-cheap"
    changed = api.patch(f"/api/routing/policies/{made.json()['id']}", json={"candidates": ["openai/router-dear"]})
    assert changed.status_code == 200, changed.text
    second = client.chat.completions.with_raw_response.create(model=f"router/{name}", messages=ask)
    assert second.headers["x-opentracy-route-model"] == "openai/router-dear"
    for reply in (first, second):
        assert read_trace(reply.headers["x-opentracy-trace-id"])["route_policy"] == name
    detail = api.get(f"/api/routing/policies/{made.json()['id']}").json()
    assert detail["traffic"]["requests"] == 2
    assert detail["traffic"]["shares"] == {"openai/router-cheap": 0.5, "openai/router-dear": 0.5}
    assert detail["savings"]["requests"] == 2


def test_a_policy_an_alias_routes_through_is_not_deleted_or_renamed(people: dict[str, Any]) -> None:
    from gateway.services import alias_set

    owner = logged_in(people["owner"])
    created = _create(owner, name="routed").json()
    alias_set(project=people["project"], name="smart", target="router/routed", changed_by="test")
    url = f"/api/routing/policies/{created['id']}"
    refused = owner.delete(url)
    assert refused.status_code == 400
    message = "Aliases `smart` route through `router/routed`: re-point or delete them first."
    assert refused.json() == {"detail": [message]}
    renamed = owner.patch(url, {"name": "renamed"}, content_type=JSON)
    assert renamed.status_code == 400 and "re-point them first" in renamed.json()["name"][0]
    assert RoutingPolicy.objects.filter(pk=created["id"], name="routed").exists()
    alias_set(project=people["project"], name="smart", target=DEAR, changed_by="test")
    assert owner.delete(url).status_code == 204
