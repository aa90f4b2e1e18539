"""The overview's "cost per 1k requests" tile: an alias's answered requests before and after its
latest student approval, from the raw traces (the engine's own calls, failures and other aliases
left out), as numbers from the selector and on the tile; members only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from datasets.tests.cluster_support import record, write
from distillation import selectors
from distillation import services as S
from distillation.models import Student

from .job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)


def _student(people: dict[str, Any], fake: Any, *, name: str, alias: str, at: datetime) -> Student:
    teacher_alias(people, fake)
    job = S.job_create(project=people["project"], dataset_version=frozen_version(people, rows=4), teacher="teacher",
                       n=2, judge={"kind": "exact"}, settings={"steps": 2}, user=people["owner"])  # fmt: skip
    student = Student.objects.create(project=people["project"], job=job, base=job.student, adapter_path="/nowhere",
                                     version=1, name=name, alias=alias, replaced_target="openai/gpt-4o",
                                     approved_at=at)  # fmt: skip
    student.refresh_from_db()
    return student


def _minutes_ago(approved: datetime, minutes: float) -> float:
    return (datetime.now(UTC) - approved).total_seconds() / 60 + minutes


def test_before_and_after_the_latest_approval(
    people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(S, "_enqueue", lambda job_id: None)
    project_id = people["project"].id
    assert selectors.cost_per_1k_around_approval(project_id) is None  # nothing approved yet

    approved = timezone.now() - timedelta(minutes=30)
    dear = {"alias": "smart", "model": "openai/gpt-4o"}
    write(
        [record(project_id, "[]", _minutes_ago(approved, m), cost_total_usd=c, **dear)
         for m, c in ((5, 0.002), (4, 0.004), (3, 0.003))]
        + [  # a model without a price: a request, no cost
            record(project_id, "[]", _minutes_ago(approved, 2), alias="smart", model="openai/priceless-model",
                   cost_total_usd=None),
            record(project_id, "[]", _minutes_ago(approved, 1), status=502, cost_total_usd=0.5, **dear),  # failed
            record(project_id, "[]", _minutes_ago(approved, 1), cost_total_usd=0.9, model="openai/gpt-4o"),  # no alias
            record(project_id, "[]", _minutes_ago(approved, 1), cost_total_usd=0.7, alias="other", model="openai/x"),
            record(project_id, "[]", _minutes_ago(approved, 1), cost_total_usd=0.8,  # the engine's own call
                   metadata={"opentracy_internal": "distillation-teacher"}, **dear),
        ]
        + [record(project_id, "[]", _minutes_ago(approved, -m), cost_total_usd=None, alias="smart",
                  model="local/smollm2-135m-instruct-v1") for m in (1, 2)]
        + [record(people["other_project"].id, "[]", 1, cost_total_usd=5.0, **dear)]
    )  # fmt: skip
    student = _student(people, providers["openai"], name="smollm2-135m-instruct-v1", alias="smart", at=approved)

    got = selectors.cost_per_1k_around_approval(project_id)
    assert got is not None
    assert (got["alias"], got["student"], got["replaced"]) == ("smart", student.model, "openai/gpt-4o")
    assert got["before"] == {"requests": 4, "cost_usd": 0.009, "unpriced": 1,
                             "models": ["openai/gpt-4o", "openai/priceless-model"],
                             "per_1k_usd": 2.25}  # fmt: skip
    # The student runs here: unpriced answers, so its cost per 1k requests is 0.
    assert got["after"]["requests"] == 2 and got["after"]["per_1k_usd"] == 0.0
    assert got["after"]["models"] == ["local/smollm2-135m-instruct-v1"] and got["change"] == -1.0

    # The tile, for a member; anyone else gets 404 (outsider) or the login page (anonymous).
    member = Client()
    member.force_login(people["member"])
    tile = member.get("/projects/acme/overview/distilled", headers={"HX-Request": "true"}).content.decode()
    assert 'data-before="2.25"' in tile and 'data-after="0.0"' in tile
    assert "$2.25" in tile and "$0.00" in tile and "4 requests" in tile and "2 requests" in tile
    assert "(-100.0%)" in tile and "some answers unpriced" in tile
    outsider = Client()
    outsider.force_login(people["outsider"])
    assert outsider.get("/projects/acme/overview/distilled").status_code == 404
    assert Client().get("/projects/acme/overview/distilled").status_code == 302

    # A second approval on the alias: "before" starts at the first one.
    later = approved + timedelta(minutes=20)
    write([record(project_id, "[]", _minutes_ago(later, 1), cost_total_usd=0.001, alias="smart",
                  model="local/smollm2-135m-instruct-v1")])  # fmt: skip
    _student(people, providers["openai"], name="smollm2-135m-instruct-v2", alias="smart", at=later)
    again = selectors.cost_per_1k_around_approval(project_id)
    assert again is not None and again["student"] == "local/smollm2-135m-instruct-v2"
    assert again["before"]["requests"] == 3 and again["before"]["per_1k_usd"] == pytest.approx(1000 * 0.001 / 3)
    assert again["after"]["requests"] == 0 and again["after"]["per_1k_usd"] is None and again["change"] is None


def test_the_overview_loads_the_tile(people: dict[str, Any]) -> None:
    write([record(people["project"].id, "[]", 1)])
    owner = Client()
    owner.force_login(people["owner"])
    page = owner.get("/projects/acme/overview").content.decode()
    assert 'hx-get="/projects/acme/overview/distilled"' in page
    tile = owner.get("/projects/acme/overview/distilled").content.decode()
    assert 'id="cost-per-1k"' in tile and "compared before and after a distilled student is approved" in tile
