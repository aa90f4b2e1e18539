"""The clustering REST API: start and follow a run, page through a cluster's traces, rename, flag,
merge and split; bad input in DRF's shape; other projects' runs and clusters are 404."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from datasets.models import Cluster, ClusteringRun
from datasets.tests.cluster_support import banking, finish, write_banking

pytestmark = pytest.mark.django_db(transaction=True)


def _client(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def done_run(people: dict[str, Any], api_key: str) -> dict[str, Any]:
    """A finished run of the project's Banking77 traces, started through the API."""
    project = people["project"]
    write_banking(project.id, banking(per_intent=20, intents=("exchange_rate", "pin_blocked", "card_arrival")))
    api = _client(api_key)
    resp = api.post("/api/clustering/runs", {"range": "24h", "params": {"namer": ""}}, content_type="application/json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["status"] == "queued" and body["filters"] == {"range": "24h"}
    run = finish(ClusteringRun.objects.get(pk=body["id"]))
    assert run.status == ClusteringRun.Status.DONE, run.message
    return {"api": api, "run": run}


def test_a_run_is_started_polled_and_its_clusters_read(done_run: dict[str, Any]) -> None:
    api, run = done_run["api"], done_run["run"]
    body = api.get(f"/api/clustering/runs/{run.pk}").json()
    assert body["status"] == "done" and body["progress"] == 1.0 and body["phase"] == "done"
    assert body["trace_count"] == 60 and body["cluster_count"] == len(body["clusters"]) >= 3
    assert "Named from keywords (no namer reachable: no namer alias was given)" in body["message"]
    first = body["clusters"][0]
    assert set(first) >= {"id", "identity", "name", "description", "size", "keywords", "cost_usd", "error_rate",
                          "status", "worth_distilling"}  # fmt: skip
    assert first["status"] == "active" and first["size"] >= 10 and first["name"]
    assert [r["id"] for r in api.get("/api/clustering/runs").json()["data"]] == [run.pk]

    # Member traces, walked by cursor pages: every member once.
    seen: list[str] = []
    url = f"/api/clusters/{first['id']}/traces?limit=7"
    while url:
        page = api.get(url).json()
        seen += page["data"]
        url = f"/api/clusters/{first['id']}/traces?limit=7&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert len(seen) == len(set(seen)) == first["size"]

    detail = api.get(f"/api/clusters/{first['id']}").json()
    assert detail["representatives"][0]["trace_id"] in seen
    assert sum(m["requests"] for m in detail["models_served"]) == first["size"]

    # Cancelling a finished run is refused with the reason.
    resp = api.post(f"/api/clustering/runs/{run.pk}/cancel")
    assert resp.status_code == 400 and resp.json() == {"detail": ["The run already finished (done)."]}


def test_rename_flag_merge_and_split(done_run: dict[str, Any]) -> None:
    api, run = done_run["api"], done_run["run"]
    a, b = Cluster.objects.filter(run=run)[:2]
    resp = api.patch(
        f"/api/clusters/{a.pk}",
        {"name": "Exchange rates", "description": "What a currency costs.", "worth_distilling": True},
        content_type="application/json",
    )
    assert resp.status_code == 200, resp.content
    assert resp.json()["name"] == "Exchange rates" and resp.json()["name_source"] == "person"
    assert resp.json()["worth_distilling"] is True

    resp = api.post(f"/api/clusters/{a.pk}/merge", {"other": b.pk}, content_type="application/json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["size"] == a.size + b.size
    b_now = api.get(f"/api/clusters/{b.pk}").json()
    assert b_now["status"] == "merged" and b_now["merged_into"] == a.pk
    again = api.post(f"/api/clusters/{a.pk}/merge", {"other": b.pk}, content_type="application/json")
    assert again.status_code == 400 and "only active clusters can be merged" in again.json()["other"][0]

    resp = api.post(f"/api/clusters/{a.pk}/split")
    assert resp.status_code == 201, resp.content
    children = resp.json()["children"]
    assert len(children) >= 2 and all(c["parent"] == a.pk for c in children)
    assert sum(c["size"] for c in children) == a.size + b.size
    assert api.get(f"/api/clusters/{a.pk}").json()["status"] == "split"


def test_bad_input_is_a_400_naming_the_field(people: dict[str, Any], api_key: str) -> None:
    api = _client(api_key)

    def post(body: Any) -> Any:
        return api.post("/api/clustering/runs", body, content_type="application/json")

    resp = post({"range": "1y"})
    assert resp.status_code == 400 and resp.json() == {"range": ["Use one of 1h, 24h, 7d, 30d, all or custom."]}
    resp = post({"params": {"reduction": "tsne", "prompt_fields": "x", "min_cluster_size": "many"}})
    assert resp.status_code == 400
    assert set(resp.json()) == {"reduction", "prompt_fields", "min_cluster_size"}
    assert post({"filters": {"colour": "red"}}).json()["filters"][0].startswith("Unknown filter(s) colour")
    assert post({"filters": {"range": "7d"}, "model": "x"}).status_code == 400
    assert post(["not", "an", "object"]).status_code == 400
    assert post({"params": "fast"}).status_code == 400
    assert not ClusteringRun.objects.exists()

    assert api.get("/api/clustering/runs/999999").status_code == 404
    run = ClusteringRun.objects.create(project=people["project"])
    cluster = Cluster.objects.create(project=people["project"], run=run, label=0, name="x")
    assert api.get(f"/api/clusters/{cluster.pk}/traces?limit=0").json() == {"limit": ["Must be between 1 and 1000."]}
    assert api.get(f"/api/clusters/{cluster.pk}/traces?cursor=nope").json() == {"cursor": ["Invalid cursor."]}
    resp = api.patch(f"/api/clusters/{cluster.pk}", {}, content_type="application/json")
    assert resp.status_code == 400
    resp = api.patch(f"/api/clusters/{cluster.pk}", {"name": "   "}, content_type="application/json")
    assert resp.status_code == 400
    resp = api.post(f"/api/clusters/{cluster.pk}/split")
    assert resp.status_code == 400 and "splitting needs at least 20" in resp.json()["detail"][0]
    # A queued run is cancelled at once.
    resp = api.post(f"/api/clustering/runs/{run.pk}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"


def test_outsiders_get_404_and_anonymous_callers_are_refused(
    people: dict[str, Any], api_key: str, outsider_key: str
) -> None:
    run = ClusteringRun.objects.create(project=people["project"], status=ClusteringRun.Status.DONE)
    cluster = Cluster.objects.create(project=people["project"], run=run, label=0, name="Secret intent")
    theirs = Cluster.objects.create(
        project=people["other_project"],
        run=ClusteringRun.objects.create(project=people["other_project"]),
        label=0,
    )
    outsider = _client(outsider_key)
    calls = [
        ("get", f"/api/clustering/runs/{run.pk}", None),
        ("post", f"/api/clustering/runs/{run.pk}/cancel", None),
        ("get", f"/api/clusters/{cluster.pk}", None),
        ("get", f"/api/clusters/{cluster.pk}/traces", None),
        ("patch", f"/api/clusters/{cluster.pk}", {"name": "mine now"}),
        ("post", f"/api/clusters/{cluster.pk}/merge", {"other": theirs.pk}),
        ("post", f"/api/clusters/{cluster.pk}/split", None),
    ]
    for method, path, body in calls:
        resp = getattr(outsider, method)(path, body or {}, content_type="application/json")
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert getattr(Client(), method)(path, body or {}, content_type="application/json").status_code in (401, 403)
    assert [r["id"] for r in outsider.get("/api/clustering/runs").json()["data"]] == [theirs.run_id]
    # Merging in a cluster of another project is refused the same way.
    resp = _client(api_key).post(
        f"/api/clusters/{cluster.pk}/merge", {"other": theirs.pk}, content_type="application/json"
    )
    assert resp.status_code == 404
    cluster.refresh_from_db()
    assert cluster.name == "Secret intent" and cluster.status == "active"

    # A member's session reaches the project's runs (the project by ?project=<slug>).
    browser = Client()
    browser.force_login(people["member"])
    assert browser.get(f"/api/clustering/runs/{run.pk}?project=acme").status_code == 200
    assert browser.get(f"/api/clustering/runs/{run.pk}?project=other").status_code == 404
