"""The dataset pages: list and import, create from clusters (as the clusters page posts), the
curation page with its rows, shortcuts script, keep via htmx, inline edit with a conflict, bulk,
freeze, judge and override; outsiders get 404, anonymous visitors the login page."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from datasets import curation as C
from datasets import judge as J
from datasets.models import Dataset, DatasetRow, JudgeRun, Verdict
from datasets.tests.dataset_support import cluster_of

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}
XSS = "<script>alert(1)</script>"


def browser(user: Any = None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


@pytest.fixture
def dataset(people: dict[str, Any]) -> Dataset:
    lines = [
        {"prompt": "What is 2+2?", "response": "4", "model": "m-a"},
        {"prompt": XSS, "response": "escaped?", "model": "m-b"},
        {"prompt": "JSON please", "response": "not json", "model": "m-a"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    return C.dataset_import_jsonl(project=people["project"], name="Quiz", file=data, user=people["owner"])


def _rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<article id="row-(\d+)"', html)]


def test_list_page_and_import(people: dict[str, Any], dataset: Dataset) -> None:
    owner = browser(people["owner"])
    html = owner.get("/projects/acme/datasets").content.decode()
    assert f'href="/projects/acme/datasets/{dataset.pk}"' in html and "Quiz" in html
    assert 'href="/projects/acme/datasets" class="active"' in html  # the nav's Datasets link
    upload = SimpleUploadedFile("more.jsonl", b'{"prompt": "a", "response": "b"}\n')
    r = owner.post("/projects/acme/datasets", {"name": "More", "file": upload})
    new = Dataset.objects.get(name="More")
    assert r.status_code == 302 and r["Location"] == f"/projects/acme/datasets/{new.pk}"
    bad = SimpleUploadedFile("bad.jsonl", b'{"prompt": "a", "response": "b"}\n{"prompt": 3}\n')
    r = owner.post("/projects/acme/datasets", {"name": "Bad", "file": bad})
    assert r.status_code == 400 and "line 2: " in r.content.decode()
    assert not Dataset.objects.filter(name="Bad").exists()


def test_create_from_clusters_as_the_clusters_page_posts(people: dict[str, Any]) -> None:
    cluster = cluster_of(people["project"], [{"prompt": "p", "answer": "a"}], name="Greetings")
    owner = browser(people["owner"])
    r = owner.post("/projects/acme/datasets/create", {"clusters": [cluster.pk]})
    dataset = Dataset.objects.get()
    assert r.status_code == 302 and dataset.name == "Greetings dataset"
    assert C.open_version(dataset=dataset).rows.count() == 1
    theirs = cluster_of(people["other_project"], [{"prompt": "p", "answer": "a"}])
    r = owner.post("/projects/acme/datasets/create", {"clusters": [theirs.pk], "name": "x"})
    assert r.status_code == 400 and "No such cluster in this project" in r.content.decode()


def test_curation_page_shows_rows_counter_and_shortcuts(people: dict[str, Any], dataset: Dataset) -> None:
    row = C.open_version(dataset=dataset).rows.get(model="m-a", response="4")
    Verdict.objects.create(row=row, judge="judge", kind="pointwise", score=3.0, passed=False, reason="too terse")
    r = browser(people["member"]).get(f"/projects/acme/datasets/{dataset.pk}")
    html = r.content.decode()
    assert r.status_code == 200
    assert len(_rows(html)) == 3 and html.count('id="progress"') == 1
    assert '<script src="/static/datasets/curate.js' in html and "<kbd>k</kbd> keep" in html
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'id="count-pending">3<' in html and 'id="count-total">3<' in html
    assert "judge 3.0: flagged" in html and "too terse" in html
    assert f"/api/datasets/{dataset.pk}/export?project=acme&amp;version=1&amp;format=openai" in html
    assert "Freeze v1" in html
    filtered = browser(people["member"]).get(f"/projects/acme/datasets/{dataset.pk}", {"flagged": "true"})
    assert _rows(filtered.content.decode()) == [row.pk]


def test_keep_via_htmx_swaps_the_row(people: dict[str, Any], dataset: Dataset) -> None:
    row = C.open_version(dataset=dataset).rows.order_by("id").first()
    assert row is not None
    r = browser(people["member"]).post(
        f"/projects/acme/datasets/{dataset.pk}/rows/{row.pk}/status", {"status": "keep"}, headers=HTMX
    )
    html = r.content.decode()
    assert r.status_code == 200 and html.strip().startswith(
        f'<article id="row-{row.pk}" class="ds-row card status-keep"'
    )
    assert "<html" not in html
    assert 'id="progress" hx-swap-oob="true"' in html and 'id="count-keep">1<' in html  # the counter too
    row.refresh_from_db()
    assert row.status == "keep" and row.updated_by == people["member"]


def test_inline_edit_and_a_conflict_shows_who(people: dict[str, Any], dataset: Dataset) -> None:
    row = C.open_version(dataset=dataset).rows.order_by("id").first()
    assert row is not None
    url = f"/projects/acme/datasets/{dataset.pk}/rows/{row.pk}/edit"
    owner, member = browser(people["owner"]), browser(people["member"])
    form = member.get(url, headers=HTMX).content.decode()
    assert 'name="revision" value="0"' in form and "<textarea" in form
    r = owner.post(url, {"text": "Four.", "revision": "0"}, headers=HTMX)
    assert r.status_code == 200 and "Edited answer (training target)" in r.content.decode()
    r = member.post(url, {"text": "4 (four)", "revision": "0"}, headers=HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and "changed by owner@example.com" in html
    assert "4 (four)</textarea>" in html and 'name="revision" value="1"' in html and "Four." in html
    assert member.post(url, {"text": "4 (four)", "revision": "0"}).status_code == 409  # without htmx
    row.refresh_from_db()
    assert row.edited_response == "Four." and row.response == "4"


def test_bulk_freeze_judge_and_override(
    people: dict[str, Any], dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = browser(people["owner"])
    base = f"/projects/acme/datasets/{dataset.pk}"
    r = owner.post(f"{base}/bulk", {"model": "m-a", "bulk_status": "keep"})
    assert r.status_code == 302 and r["Location"] == f"{base}?model=m-a"
    assert set(DatasetRow.objects.filter(status="keep").values_list("model", flat=True)) == {"m-a"}

    monkeypatch.setattr(J, "_enqueue", lambda run_id: J.judge_run_execute(run=JudgeRun.objects.get(pk=run_id)))
    r = owner.post(f"{base}/judge", {"kind": "json", "version": "1"}, headers=HTMX)
    run = JudgeRun.objects.get()
    started = r.content.decode()  # rendered as queued (the task runs on commit): it polls
    assert (
        r.status_code == 200
        and f'id="judge-run-{run.pk}"' in started
        and 'hx-trigger="every 1s [!this.dataset.live]"' in started
    )
    assert f'data-progress="/ws/projects/acme/progress/judge/{run.pk}"' in started
    progress = owner.get(f"{base}/judge/{run.pk}").content.decode()
    assert "done" in progress and "1 passed · 2 flagged" in progress and "every 1s" not in progress
    bad = owner.post(f"{base}/judge", {"kind": "regex", "pattern": "("}, headers=HTMX)
    assert "not a valid regular expression" in bad.content.decode()

    verdict = Verdict.objects.filter(row__response="escaped?").get()
    r = owner.post(
        f"{base}/verdicts/{verdict.pk}/override", {"passed": "true", "reason": "a number is fine"}, headers=HTMX
    )
    assert "overridden by owner@example.com: a number is fine" in r.content.decode()
    verdict.refresh_from_db()
    assert verdict.override_passed is True and not verdict.flagged

    r = owner.post(f"{base}/freeze", {"note": "first"})
    assert r.status_code == 302
    assert dataset.versions.get(number=1).frozen and C.open_version(dataset=dataset).number == 2
    frozen = owner.get(base, {"version": "1"}).content.decode()
    assert "is frozen: it is read-only" in frozen and "ds-keep" not in frozen


def test_outsiders_get_404_and_anonymous_visitors_log_in(people: dict[str, Any], dataset: Dataset) -> None:
    row = C.open_version(dataset=dataset).rows.order_by("id").first()
    assert row is not None
    base = f"/projects/acme/datasets/{dataset.pk}"
    outsider = browser(people["outsider"])
    for url in ("/projects/acme/datasets", base, f"{base}/rows/{row.pk}/edit"):
        assert outsider.get(url).status_code == 404, url
    for url in (
        f"{base}/rows/{row.pk}/status",
        f"{base}/bulk",
        f"{base}/freeze",
        f"{base}/judge",
        "/projects/acme/datasets/create",
    ):
        assert outsider.post(url, {"status": "drop", "bulk_status": "drop", "kind": "json"}).status_code == 404, url
    # Their own project's URL with our dataset id: 404 as well.
    assert outsider.get(f"/projects/other/datasets/{dataset.pk}").status_code == 404
    anonymous = Client().get(base)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    row.refresh_from_db()
    assert row.status == "pending" and not dataset.versions.filter(frozen_at__isnull=False).exists()
