"""A distillation job's page in headless Chromium: phase, step, loss, ETA and the progress bar move
as the job's own row helpers (distillation/jobs.py) record progress — pushed over the progress
websocket through the live server, with htmx polling paused while the socket delivers — the loss
chart grows from the pushed points, and the finished job reloads into its final state (its own
module: Playwright's fixture is module-scoped)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from distillation import jobs
from distillation import services as S
from distillation.tests.job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_job_page_follows_the_job_live(
    logged_in_page: Any, people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(S, "_enqueue", lambda job_id: None)  # the test plays the worker, step by step
    teacher_alias(people, providers["openai"])
    job = S.job_create(project=people["project"], dataset_version=frozen_version(people, rows=4), teacher="teacher",
                       n=2, judge={"kind": "exact"}, settings={"steps": 10}, user=people["owner"])  # fmt: skip
    page = logged_in_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.headers.get("hx-request") else None)
    page.goto(f"/projects/acme/distillation/{job.pk}")
    page.wait_for_selector("#job-progress[data-live]")  # the socket's first message (the current state)
    assert page.locator("#job-progress [data-p=status]").inner_text() == "queued"

    jobs._set(job, status="running")
    jobs._phase(job, "training")
    history: list[dict[str, float]] = []
    for step in range(1, 9):  # about 2.8 s: long enough for an ETA
        time.sleep(0.35)
        history.append({"step": step, "loss": 2.0 / step, "kl": 0.01 * step})
        jobs._set(job, metrics={"history": history, "steps": 10})
        jobs._progress(job, "training", step / 10)
    page.wait_for_function("document.querySelector('#job-progress [data-p=step]').textContent === 'step 8 of 10'")
    # The last progress write follows the last step within one throttle interval (coalesced, never lost).
    page.wait_for_function("document.querySelector('#job-progress [data-p=pct]').textContent === '81%'")
    bar = float(page.locator("#job-progress progress").evaluate("el => el.value"))
    assert bar == pytest.approx(0.45 + 0.45 * 0.8, abs=1e-3)  # training spans 45% to 90% of the bar
    assert page.locator("#job-progress [data-p=phase]").inner_text() == "training"
    assert page.locator("#job-progress [data-p=loss]").inner_text() == "loss 0.2500"
    assert page.locator("#job-progress [data-p=eta]").inner_text().endswith(" s left")
    page.wait_for_selector("#chart-loss canvas")  # drawn from the pushed points (the page loaded with none)
    assert polls == []  # htmx polling stayed paused while the socket delivered

    jobs._set(job, status="done", phase="done", progress=1.0)
    page.wait_for_selector("#job-approve")  # the finished job reloads the page: approve appears
    assert page.locator("#job-progress .status").inner_text() == "done"
    assert page.locator("#job-progress[data-progress]").count() == 0  # finished: no socket, no polling
    assert errors == []


def test_the_create_wizard_in_the_browser(
    logged_in_page: Any, people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four htmx steps (the clicked button says next or back), a refused value shown on its step,
    the draft's estimate, then Start lands on the queued job's page."""
    from distillation.models import DistillationJob

    queued: list[int] = []
    monkeypatch.setattr(S, "_enqueue", queued.append)
    teacher_alias(people, providers["openai"])
    version = frozen_version(people, rows=4)
    page = logged_in_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/projects/acme/distillation")
    page.click("#new-job")
    page.wait_for_selector("#wizard[data-step='1']")
    page.select_option("#w-version", str(version.pk))
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='2']")
    page.fill("#w-teacher", "teacher")
    page.fill("#w-n", "1")
    page.select_option("#w-judge-kind", "exact")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard-errors")  # refused by the service, on step 2
    assert page.locator("#wizard").get_attribute("data-step") == "2"
    assert "N must be an integer from 2 to 32" in page.locator("#wizard-errors").inner_text()
    page.fill("#w-n", "2")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='3']")
    assert page.locator("#w-steps").input_value() == "200"  # the trainer's default, shown
    page.fill("#w-steps", "4")
    page.click("button[value=back]")
    page.wait_for_selector("#wizard[data-step='2']")
    assert page.locator("#w-teacher").input_value() == "teacher" and page.locator("#w-n").input_value() == "2"
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='3']")
    assert page.locator("#w-steps").input_value() == "4"  # kept across Back
    page.click("button[value=next]")
    page.wait_for_selector("#wizard-estimate")
    job = DistillationJob.objects.get()
    assert job.status == "draft" and job.n == 2 and job.settings["steps"] == 4
    assert f"{job.estimate['teacher']['calls']}" in page.locator("#wizard-estimate").inner_text()
    page.click("#wizard-start button")
    page.wait_for_url(f"**/projects/acme/distillation/{job.pk}")
    job.refresh_from_db()
    assert job.status == "queued" and queued == [job.pk]
    assert errors == []
