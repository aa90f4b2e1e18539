"""The distillation API: create (estimate, dry run, draft), read, cancel, start, approve and roll
back; errors in DRF's shape; another project's job is 404 and anonymous callers are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from distillation import services as S
from distillation.models import DistillationJob
from gateway.models import Alias
from gateway.services import alias_set

from .job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def setup(people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(S, "_enqueue", lambda job_id: None)
    teacher_alias(people, providers["openai"])
    owner = Client()
    owner.force_login(people["owner"])
    outsider = Client()
    outsider.force_login(people["outsider"])
    return {"version": frozen_version(people, rows=5), "owner": owner, "outsider": outsider}


def _body(version: Any, **extra: Any) -> dict[str, Any]:
    return {"dataset_version": version.pk, "teacher": "teacher", "n": 2, "judge": {"kind": "exact"},
            "settings": {"steps": 3}, **extra}  # fmt: skip


def test_create_read_cancel_and_start(people: dict[str, Any], setup: dict[str, Any]) -> None:
    client, version = setup["owner"], setup["version"]
    dry = client.post("/api/distillation/jobs?dry_run=1", _body(version), content_type="application/json")
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert dry.json()["estimate"]["teacher"]["calls"] == 4 * 2 + 1 and not DistillationJob.objects.exists()

    created = client.post("/api/distillation/jobs", _body(version, start=False), content_type="application/json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert (
        data["status"] == "draft"
        and data["estimate"]["train_prompts"] == 4
        and data["split"]
        == {
            "train": 4,
            "held_out": 1,
        }
    )
    got = client.get(f"/api/distillation/jobs/{data['id']}").json()
    assert got["phase"] == "" and got["progress"] == 0 and got["metrics"] == {} and got["evaluation"] == {}
    assert [j["id"] for j in client.get("/api/distillation/jobs").json()["data"]] == [data["id"]]

    started = client.post(f"/api/distillation/jobs/{data['id']}/start")
    assert started.status_code == 200 and started.json()["status"] == "queued"
    again = client.post(f"/api/distillation/jobs/{data['id']}/start")
    assert again.status_code == 400 and "only a draft, failed or cancelled" in again.json()["detail"][0]
    cancelled = client.post(f"/api/distillation/jobs/{data['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    twice = client.post(f"/api/distillation/jobs/{data['id']}/cancel")
    assert twice.status_code == 400 and "already finished" in twice.json()["detail"][0]


def test_bad_input_in_drf_shape(people: dict[str, Any], setup: dict[str, Any]) -> None:
    client, version = setup["owner"], setup["version"]
    from datasets import curation as C

    open_version = C.open_version(dataset=version.dataset)
    cases = [
        (_body(open_version), "dataset_version", "is not frozen"),
        (_body(version, n=1), "n", "from 2 to"),
        (_body(version, student="nope"), "student", "Unknown student 'nope'"),
        (_body(version, settings={"steps": -1}), "steps", "from 1"),
        (_body(version, judge="exact"), "judge", "An object"),
        ({"teacher": "teacher"}, "dataset_version", "Give dataset_version"),
        ({"dataset_version": version.pk}, "teacher", "required"),
        (_body(version, dataset_version=999999), "dataset_version", "No such dataset version"),
    ]
    for body, field, text in cases:
        resp = client.post("/api/distillation/jobs", body, content_type="application/json")
        assert resp.status_code == 400, (body, resp.json())
        assert text in " ".join(resp.json()[field]), (field, resp.json())
    assert not DistillationJob.objects.exists()


def test_approve_and_rollback(people: dict[str, Any], setup: dict[str, Any], tmp_path: Path) -> None:
    client, version = setup["owner"], setup["version"]
    project = people["project"]
    alias_set(project=project, name="bot", target="openai/gpt-4o", changed_by="test")
    job_id = client.post("/api/distillation/jobs", _body(version, start=False), content_type="application/json").json()[
        "id"
    ]
    early = client.post(f"/api/distillation/jobs/{job_id}/approve", {"alias": "bot"}, content_type="application/json")
    assert early.status_code == 400 and "Only a finished job" in early.json()["detail"][0]
    DistillationJob.objects.filter(pk=job_id).update(status="done", adapter_path=str(tmp_path))
    missing = client.post(f"/api/distillation/jobs/{job_id}/approve", {}, content_type="application/json")
    assert missing.status_code == 400 and "alias" in missing.json()
    ok = client.post(f"/api/distillation/jobs/{job_id}/approve", {"alias": "bot"}, content_type="application/json")
    assert ok.status_code == 200, ok.json()
    assert ok.json() == {
        "student": "smollm2-135m-instruct-v1",
        "alias": "bot",
        "target": "local/smollm2-135m-instruct-v1",
        "serving": "local",
    }
    assert Alias.objects.get(project=project, name="bot").target == "local/smollm2-135m-instruct-v1"
    assert client.get(f"/api/distillation/jobs/{job_id}").json()["students"][0]["name"] == "smollm2-135m-instruct-v1"
    history = client.get("/api/aliases/bot").json()
    assert "local/smollm2-135m-instruct-v1" in str(history)
    back = client.post(f"/api/distillation/jobs/{job_id}/rollback")
    assert back.status_code == 200 and back.json() == {"alias": "bot", "target": "openai/gpt-4o"}
    assert Alias.objects.get(project=project, name="bot").target == "openai/gpt-4o"
    nothing = client.post(f"/api/distillation/jobs/{job_id}/rollback")
    assert nothing.status_code == 400 and "nothing to roll back" in nothing.json()["detail"][0]


def test_scoping(people: dict[str, Any], setup: dict[str, Any], api_key: str, outsider_key: str) -> None:
    version = setup["version"]
    job_id = (
        setup["owner"]
        .post("/api/distillation/jobs", _body(version, start=False), content_type="application/json")
        .json()["id"]
    )
    # The project's engine key works like a member's session.
    mine = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert mine.get(f"/api/distillation/jobs/{job_id}").json()["id"] == job_id
    member = Client()
    member.force_login(people["member"])
    assert member.get(f"/api/distillation/jobs/{job_id}?project=acme").status_code == 200
    # Another project's caller: 404 on every endpoint, and cannot use this project's versions.
    for other in (setup["outsider"], Client(HTTP_AUTHORIZATION=f"Bearer {outsider_key}")):
        assert other.get(f"/api/distillation/jobs/{job_id}").status_code == 404
        for action in ("cancel", "start", "approve", "rollback"):
            assert other.post(f"/api/distillation/jobs/{job_id}/{action}", {"alias": "x"}).status_code == 404
        assert other.get("/api/distillation/jobs").json()["data"] == []
        resp = other.post("/api/distillation/jobs", _body(version), content_type="application/json")
        assert resp.status_code == 400 and "No such dataset version" in resp.json()["dataset_version"][0]
    assert setup["outsider"].get(f"/api/distillation/jobs/{job_id}?project=acme").status_code == 404
    anonymous = Client()
    assert anonymous.get(f"/api/distillation/jobs/{job_id}").status_code in (401, 403)
    assert anonymous.post("/api/distillation/jobs", _body(version), content_type="application/json").status_code in (
        401,
        403,
    )
    assert DistillationJob.objects.count() == 1
