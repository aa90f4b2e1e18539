"""The datasets REST API: create, import, rows, edits with revisions, bulk, freeze, judge,
override; project scoping (API key or session), outsiders 404 and anonymous callers refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from datasets import curation as C
from datasets import judge as J
from datasets.models import Dataset, Verdict
from datasets.tests.dataset_support import cluster_of

pytestmark = pytest.mark.django_db(transaction=True)

LINES = [
    {"prompt": "q1", "response": '{"ok": true}', "model": "m-a"},
    {"prompt": "q2", "response": "not json", "model": "m-a"},
    {"prompt": "q3", "response": "[1]", "model": "m-b"},
]


def key_client(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def session(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def api(api_key: str) -> Client:
    return key_client(api_key)


@pytest.fixture
def dataset(people: dict[str, Any]) -> Dataset:
    data = "\n".join(json.dumps(line) for line in LINES).encode()
    return C.dataset_import_jsonl(project=people["project"], name="Imported", file=data, user=people["owner"])


def _jsonl(lines: list[Any]) -> SimpleUploadedFile:
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    return SimpleUploadedFile("data.jsonl", body.encode(), content_type="application/x-ndjson")


def test_create_from_clusters(api: Client, people: dict[str, Any]) -> None:
    project = people["project"]
    cluster = cluster_of(project, [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(3)])
    r = api.post("/api/datasets", {"name": "From clusters", "clusters": [cluster.pk]}, content_type="application/json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["version"] == 1 and body["row_count"] == 3 and body["clusters"] == [cluster.pk]
    theirs = cluster_of(people["other_project"], [{"prompt": "x", "answer": "y"}])
    r = api.post("/api/datasets", {"name": "x", "clusters": [theirs.pk]}, content_type="application/json")
    assert r.status_code == 400 and f"No such cluster in this project: {theirs.pk}" in r.json()["clusters"][0]
    r = api.post("/api/datasets", {"clusters": []}, content_type="application/json")
    assert r.status_code == 400 and set(r.json()) == {"name", "clusters"}


def test_import(api: Client) -> None:
    r = api.post("/api/datasets/import", {"name": "Quiz", "file": _jsonl(LINES)})
    assert r.status_code == 201, r.content
    assert r.json()["row_count"] == 3 and r.json()["name"] == "Quiz"
    r = api.post("/api/datasets/import", {"name": "Bad", "file": _jsonl([LINES[0], '{"prompt": "q"', LINES[1]])})
    assert r.status_code == 400
    assert r.json()["file"][0].startswith("line 2: not valid JSON")
    assert Dataset.objects.count() == 1  # nothing of the bad file
    assert api.post("/api/datasets/import", {"name": "none"}).json() == {"file": ["Attach the JSONL file as 'file'."]}


def test_list_detail_and_rows_with_filters_and_cursor(api: Client, dataset: Dataset) -> None:
    listed = api.get("/api/datasets").json()["data"]
    assert [d["id"] for d in listed] == [dataset.pk] and listed[0]["row_count"] == 3
    detail = api.get(f"/api/datasets/{dataset.pk}").json()
    assert detail["versions"][0]["counts"] == {"pending": 3, "keep": 0, "drop": 0, "total": 3}
    page = api.get(f"/api/datasets/{dataset.pk}/rows", {"limit": 2}).json()
    assert [r["messages"][0]["content"] for r in page["data"]] == ["q1", "q2"] and page["next_cursor"]
    rest = api.get(f"/api/datasets/{dataset.pk}/rows", {"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [r["messages"][0]["content"] for r in rest["data"]] == ["q3"] and rest["next_cursor"] is None
    only_b = api.get(f"/api/datasets/{dataset.pk}/rows", {"model": "m-b"}).json()["data"]
    assert [r["model"] for r in only_b] == ["m-b"] and only_b[0]["revision"] == 0
    assert api.get(f"/api/datasets/{dataset.pk}/rows", {"q": "Q2"}).json()["data"][0]["response"] == "not json"
    bad = api.get(f"/api/datasets/{dataset.pk}/rows", {"status": "maybe", "limit": "0"})
    assert bad.status_code == 400 and "status" in bad.json()
    assert api.get(f"/api/datasets/{dataset.pk}/rows", {"version": 9}).status_code == 404


def test_keep_edit_and_a_stale_revision_is_409_naming_who(dataset: Dataset, people: dict[str, Any]) -> None:
    owner, member = session(people["owner"]), session(people["member"])
    row = C.open_version(dataset=dataset).rows.order_by("id").first()
    assert row is not None
    url = f"/api/datasets/{dataset.pk}/rows/{row.pk}"
    r = owner.patch(url, {"status": "keep"}, content_type="application/json")
    assert r.status_code == 200 and r.json()["status"] == "keep" and r.json()["revision"] == 1
    r = owner.patch(url, {"edited_response": "Better.", "revision": 1}, content_type="application/json")
    body = r.json()
    assert body["edited_response"] == "Better." and body["target"] == "Better." and body["response"] == '{"ok": true}'
    assert body["updated_by"] == "owner@example.com"
    stale = member.patch(url, {"edited_response": "Mine.", "revision": 1}, content_type="application/json")
    assert stale.status_code == 409
    assert stale.json()["changed_by"] == "owner@example.com" and stale.json()["revision"] == 2
    assert "changed by owner@example.com" in stale.json()["detail"]
    missing = member.patch(url, {"edited_response": "Mine."}, content_type="application/json")
    assert missing.status_code == 400 and "revision" in missing.json()
    assert member.patch(url, {}, content_type="application/json").status_code == 400
    assert row.edits.count() == 2


def test_bulk_freeze_and_frozen_is_409(api: Client, dataset: Dataset) -> None:
    r = api.post(
        f"/api/datasets/{dataset.pk}/rows/bulk",
        {"status": "keep", "filter": {"model": "m-a"}},
        content_type="application/json",
    )
    assert r.status_code == 200 and r.json()["updated"] == 2
    assert r.json()["version"]["counts"] == {"keep": 2, "drop": 0, "pending": 1, "total": 3}
    r = api.post(
        f"/api/datasets/{dataset.pk}/rows/bulk",
        {"status": "drop", "filter": {"flagged": "x"}},
        content_type="application/json",
    )
    assert r.status_code == 400 and "flagged" in r.json()
    r = api.post(f"/api/datasets/{dataset.pk}/freeze", {"note": "v1 for distillation"}, content_type="application/json")
    assert r.status_code == 200
    assert r.json()["frozen"]["number"] == 1 and r.json()["frozen"]["frozen"] is True
    assert r.json()["open"] == {**r.json()["open"], "number": 2, "frozen": False}
    v1_row = dataset.versions.get(number=1).rows.order_by("id").first()
    assert v1_row is not None
    r = api.patch(f"/api/datasets/{dataset.pk}/rows/{v1_row.pk}", {"status": "drop"}, content_type="application/json")
    assert r.status_code == 409 and "frozen" in r.json()["detail"]
    detail = api.get(f"/api/datasets/{dataset.pk}").json()
    assert [v["number"] for v in detail["versions"]] == [2, 1] and detail["version"] == 2


def test_judge_run_and_override(api: Client, dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_now(run_id: int) -> None:
        from datasets.models import JudgeRun

        J.judge_run_execute(run=JudgeRun.objects.get(pk=run_id))

    monkeypatch.setattr(J, "_enqueue", run_now)  # the worker path is tested in test_judge.py
    r = api.post(f"/api/datasets/{dataset.pk}/judge", {"kind": "json"}, content_type="application/json")
    assert r.status_code == 202, r.content
    run = api.get(f"/api/judge-runs/{r.json()['id']}").json()
    assert run["status"] == "done" and run["summary"] == {"passed": 2, "flagged": 1, "unjudged": 0}
    bad = api.post(
        f"/api/datasets/{dataset.pk}/judge",
        {"kind": "regex", "options": {"pattern": "("}},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "regular expression" in bad.json()["options"][0]
    flagged = api.get(f"/api/datasets/{dataset.pk}/rows", {"flagged": "true"}).json()["data"]
    assert [row["response"] for row in flagged] == ["not json"]
    verdict_id = flagged[0]["verdicts"][0]["id"]
    r = api.post(
        f"/api/verdicts/{verdict_id}/override",
        {"passed": True, "reason": "prose is fine"},
        content_type="application/json",
    )
    assert r.status_code == 200 and r.json()["override_passed"] is True and r.json()["flagged"] is False
    assert api.get(f"/api/datasets/{dataset.pk}/rows", {"flagged": "true"}).json()["data"] == []
    assert Verdict.objects.get(pk=verdict_id).override_reason == "prose is fine"
    assert api.post(f"/api/judge-runs/{run['id']}/cancel").json()["status"] == "done"  # finished: stays so


def test_outsiders_get_404_and_anonymous_callers_are_refused(
    dataset: Dataset, people: dict[str, Any], outsider_key: str
) -> None:
    row = C.open_version(dataset=dataset).rows.first()
    assert row is not None
    verdict = Verdict.objects.create(row=row, judge="json", kind="json", passed=False)
    run = J.JudgeRun.objects.create(version=row.version, kind="json", judge="json", status="done")
    pk = dataset.pk
    gets = [
        f"/api/datasets/{pk}",
        f"/api/datasets/{pk}/rows",
        f"/api/datasets/{pk}/export",
        f"/api/judge-runs/{run.pk}",
    ]
    posts = [
        (f"/api/datasets/{pk}/rows/bulk", {"status": "drop"}),
        (f"/api/datasets/{pk}/freeze", {}),
        (f"/api/datasets/{pk}/judge", {"kind": "json"}),
        (f"/api/verdicts/{verdict.pk}/override", {"passed": True}),
        (f"/api/judge-runs/{run.pk}/cancel", {}),
    ]
    for outsider in (key_client(outsider_key), session(people["outsider"])):
        for url in gets:
            assert outsider.get(url).status_code == 404, url
        for url, body in posts:
            assert outsider.post(url, body, content_type="application/json").status_code == 404, url
        patch = outsider.patch(f"/api/datasets/{pk}/rows/{row.pk}", {"status": "drop"}, content_type="application/json")
        assert patch.status_code == 404
        assert outsider.get("/api/datasets").json()["data"] == []
    # A session asking for the project by slug it does not belong to: 404 too.
    assert session(people["outsider"]).get(f"/api/datasets/{pk}", {"project": "acme"}).status_code == 404
    anonymous = Client()
    for url in [*gets, "/api/datasets"]:
        assert anonymous.get(url).status_code in (401, 403), url
    assert anonymous.post("/api/datasets/import", {}).status_code in (401, 403)
    row.refresh_from_db()
    assert row.status == "pending" and not row.version.frozen and J.JudgeRun.objects.count() == 1
