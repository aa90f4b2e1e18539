"""The distillation pages: the jobs list, a job with its estimate, polled progress, loss series and
evaluation, cancel and approve forms; members only (others 404, anonymous to the login page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from distillation import services as S
from distillation.models import DistillationJob
from gateway.models import Alias

from .job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def job(people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> DistillationJob:
    monkeypatch.setattr(S, "_enqueue", lambda job_id: None)
    teacher_alias(people, providers["openai"])
    return S.job_create(project=people["project"], dataset_version=frozen_version(people, rows=4), teacher="teacher",
                        n=2, judge={"kind": "exact"}, settings={"steps": 3}, user=people["owner"])  # fmt: skip


def test_list_and_job_pages(people: dict[str, Any], job: DistillationJob, tmp_path: Path) -> None:
    browser = Client()
    browser.force_login(people["member"])
    listing = browser.get("/projects/acme/distillation")
    assert listing.status_code == 200 and f'id="job-{job.pk}"' in listing.content.decode()
    assert 'href="/projects/acme/distillation"' in listing.content.decode()  # the nav link
    page = browser.get(f"/projects/acme/distillation/{job.pk}").content.decode()
    assert 'id="job-estimate"' in page and "unknown price" in page and "uPlot.iife.min.js" in page
    assert (
        f'hx-get="/projects/acme/distillation/{job.pk}"' in page
        and 'hx-trigger="every 2s [!this.dataset.live]"' in page
    )
    assert f'data-progress="/ws/projects/acme/progress/distillation/{job.pk}"' in page  # live, polling as fallback
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    evaluation = {
        "held_out": 1, "agreement": {"student": 1.0, "base": 0.0},
        "student_vs_teacher": {"win": 0, "tie": 1, "loss": 0},
        "models": {name: {"mean_score": 1.0, "latency_ms": 12.0, "cost_per_1k_usd": 0.0}
                   for name in ("teacher", "student", "base")},
    }  # fmt: skip
    DistillationJob.objects.filter(pk=job.pk).update(
        status="done", progress=1.0, metrics={"history": history}, evaluation=evaluation, adapter_path=str(tmp_path)
    )
    fragment = browser.get(f"/projects/acme/distillation/{job.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and "hx-trigger" not in fragment  # finished: no more polling
    series = fragment.split('id="loss-series" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(series) == {"step": [1, 2], "loss": [2.0, 1.5]}
    assert 'id="job-evaluation"' in fragment and "1 ties" in fragment
    approved = browser.post(f"/projects/acme/distillation/{job.pk}/approve", {"alias": "bot"})
    assert approved.status_code == 302
    assert Alias.objects.get(project=people["project"], name="bot").target == "local/smollm2-135m-instruct-v1"
    assert "smollm2-135m-instruct-v1" in browser.get(f"/projects/acme/distillation/{job.pk}").content.decode()


def test_cancel_and_access(people: dict[str, Any], job: DistillationJob) -> None:
    browser = Client()
    browser.force_login(people["owner"])
    assert browser.post(f"/projects/acme/distillation/{job.pk}/cancel").status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    outsider = Client()
    outsider.force_login(people["outsider"])
    assert outsider.get("/projects/acme/distillation").status_code == 404
    assert outsider.get(f"/projects/acme/distillation/{job.pk}").status_code == 404
    assert outsider.post(f"/projects/acme/distillation/{job.pk}/approve", {"alias": "x"}).status_code == 404
    assert outsider.get(f"/projects/other/distillation/{job.pk}").status_code == 404  # not that project's job
    assert Client().get("/projects/acme/distillation")["Location"].startswith("/accounts/login/")


def test_a_job_without_an_estimate_still_renders(people: dict[str, Any]) -> None:
    """A job made outside job_create (the admin, a script) has no estimate: dashes, not a crash."""
    job = DistillationJob.objects.create(
        project=people["project"], dataset_version=frozen_version(people, rows=2), teacher="openai/gpt-4o",
        student="smollm2-135m", estimate={},
    )  # fmt: skip
    member = Client()
    member.force_login(people["member"])
    page = member.get(f"/projects/acme/distillation/{job.pk}")
    assert page.status_code == 200 and "—" in page.content.decode()
