"""The create-job wizard (distillation/wizard.py, views.job_new): each step through htmx, the
service's messages on the step that owns the field, the draft's estimate, Back discarding the draft,
Start queueing it, and outsiders refused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from datasets import curation as C
from distillation import services as S
from distillation.models import DistillationJob

from .job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/projects/acme/distillation/new"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def setup(people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    queued: list[int] = []
    monkeypatch.setattr(S, "_enqueue", queued.append)
    teacher_alias(people, providers["openai"])
    version = frozen_version(people, rows=6)
    browser = Client()
    browser.force_login(people["member"])
    return {"version": version, "browser": browser, "queued": queued}


def hidden(html: str) -> dict[str, str]:
    """The form's current values, as the browser would post them (inputs, selected options, textareas)."""
    values = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    values.update(re.findall(r'<input id="w-[^"]+" name="([^"]+)" value="([^"]*)"', html))
    for name, body in re.findall(r'<select id="w-[^"]+" name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', body) or re.search(r'<option value="([^"]*)"', body)
        values[name] = chosen.group(1) if chosen else ""
    for name, text in re.findall(r'<textarea id="w-[^"]+" name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S):
        values[name] = text
    values.pop("csrfmiddlewaretoken", None)
    return values


def post(browser: Client, html: str, nav: str = "next", **changes: str) -> str:
    response = browser.post(URL, {**hidden(html), **changes, "nav": nav}, headers=HTMX)
    assert response.status_code == 200
    return response.content.decode()


def step_of(html: str) -> int:
    found = re.search(r'id="wizard" data-step="(\d)"', html)
    assert found, html[:300]
    return int(found.group(1))


def test_each_step_then_the_drafts_estimate_and_start(setup: dict[str, Any], people: dict[str, Any]) -> None:
    browser, version = setup["browser"], setup["version"]
    open_version = C.open_version(dataset=version.dataset)  # the new open version is not offered
    page = browser.get(URL)
    assert page.status_code == 200
    one = page.content.decode()
    assert step_of(one) == 1 and "<html" in one
    assert f'<option value="{version.pk}"' in one and f'<option value="{open_version.pk}"' not in one
    two = post(browser, one, dataset_version=str(version.pk))
    assert step_of(two) == 2 and "<html" not in two  # a fragment for htmx
    assert '<option value="teacher">' in two  # the project's aliases are offered
    assert 'value="smollm2-135m-instruct" selected' in two and 'name="n" value="4"' in two
    three = post(browser, two, teacher="teacher", n="3", judge_kind="exact", judge_alias="")
    assert step_of(three) == 3
    assert 'name="steps" value="200"' in three and 'name="lr" value="0.0002"' in three  # the defaults shown
    assert 'name="held_out_fraction" value="0.2"' in three
    assert not DistillationJob.objects.exists()  # nothing stored before the estimate step
    four = post(browser, three, steps="5", held_out_fraction="0.34")
    assert step_of(four) == 4
    job = DistillationJob.objects.get()
    assert job.status == "draft" and job.n == 3 and job.judge_kind == "exact" and job.settings["steps"] == 5
    assert job.held_out_fraction == pytest.approx(0.34) and job.teacher == "teacher"
    estimate = job.estimate
    assert estimate["train_prompts"] == 4 and estimate["held_out_prompts"] == 2
    assert estimate["teacher"]["calls"] == 4 * 3 + 2  # N per training prompt, one per held-out prompt
    table = four.split('id="wizard-estimate"', 1)[1].split("</table>", 1)[0]
    assert f'<td class="num">{estimate["teacher"]["calls"]}</td>' in table
    assert f"{estimate['training_seconds']['cpu']} s on CPU" in table and "programmatic" in table
    assert setup["queued"] == []
    start = browser.post(f"/projects/acme/distillation/{job.pk}/start", headers=HTMX)
    assert start.status_code == 204 and start["HX-Redirect"] == f"/projects/acme/distillation/{job.pk}"
    job.refresh_from_db()
    assert job.status == "queued" and setup["queued"] == [job.pk]


def test_back_keeps_the_values_and_discards_the_draft(setup: dict[str, Any]) -> None:
    browser, version = setup["browser"], setup["version"]
    two = post(browser, browser.get(URL).content.decode(), dataset_version=str(version.pk))
    three = post(browser, two, teacher="teacher", judge_kind="exact")
    four = post(browser, three, steps="7")
    assert step_of(four) == 4 and DistillationJob.objects.filter(status="draft").count() == 1
    back = post(browser, four, nav="back")
    assert step_of(back) == 3 and 'name="steps" value="7"' in back
    assert not DistillationJob.objects.exists()  # the unstarted draft is gone
    again = post(browser, back, nav="back")
    assert step_of(again) == 2 and 'name="teacher" value="teacher"' in again


def test_bad_input_shows_the_services_message_on_its_step(setup: dict[str, Any], people: dict[str, Any]) -> None:
    browser, version = setup["browser"], setup["version"]
    one = browser.get(URL).content.decode()
    unfrozen = C.open_version(dataset=version.dataset)
    refused = post(browser, one, dataset_version=str(unfrozen.pk))
    assert step_of(refused) == 1 and "is not frozen: freeze it first" in refused
    two = post(browser, one, dataset_version=str(version.pk))
    bad = post(browser, two, teacher="nobody-knows", n="lots")
    assert step_of(bad) == 2 and "is neither an alias of this project nor a known provider/model" in bad
    assert "N must be an integer from 2 to 32" in bad and 'name="n" value="lots"' in bad  # kept to fix
    bad_judge = post(browser, two, teacher="teacher", judge_kind="regex", judge_options="{not json")
    assert step_of(bad_judge) == 2 and "must be a JSON object" in bad_judge
    three = post(browser, two, teacher="teacher", judge_kind="exact")
    assert step_of(three) == 3
    bad_settings = post(browser, three, lr="fast", steps="0", held_out_fraction="1")
    assert step_of(bad_settings) == 3
    errors = bad_settings.split('id="wizard-errors"', 1)[1].split("</ul>", 1)[0]
    assert "<b>lr</b>: Must be a number" in errors and "<b>steps</b>: Must be from 1 to 100000" in errors
    assert "<b>held_out_fraction</b>: A number from 0 up to (not including) 1." in errors
    assert not DistillationJob.objects.exists()
    # Without htmx (no JavaScript), the same page with a 400.
    plain = browser.post(URL, {**hidden(three), "lr": "fast", "nav": "next"})
    assert (
        plain.status_code == 400 and "<html" in plain.content.decode() and "Must be a number" in plain.content.decode()
    )


def test_outsiders_are_refused(setup: dict[str, Any], people: dict[str, Any]) -> None:
    job = S.job_create(project=people["project"], dataset_version=setup["version"], teacher="teacher",
                       judge={"kind": "exact"}, start=False)  # fmt: skip
    outsider = Client()
    outsider.force_login(people["outsider"])
    assert outsider.get(URL).status_code == 404
    assert outsider.post(URL, {"step": "1", "dataset_version": str(setup["version"].pk)}).status_code == 404
    assert outsider.post(f"/projects/acme/distillation/{job.pk}/start").status_code == 404
    assert outsider.post(f"/projects/other/distillation/{job.pk}/start").status_code == 404  # not that project's
    job.refresh_from_db()
    assert job.status == "draft" and setup["queued"] == []
    assert Client().get(URL)["Location"].startswith("/accounts/login/")
    # A member's Back cannot discard another project's job either (ids are scoped to the project).
    theirs = Client()
    theirs.force_login(people["outsider"])
    theirs.post("/projects/other/distillation/new", {"step": "4", "nav": "back", "draft": str(job.pk)})
    assert DistillationJob.objects.filter(pk=job.pk, status="draft").exists()
