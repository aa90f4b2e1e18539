"""The canary card of a job page in headless Debian Chromium (Playwright) against the live engine:
start a canary with the form, see both sides fill in as the app's requests arrive (the card
refreshes itself), change the share, stop it; no console errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from distillation.models import Canary
from gateway.models import Alias
from gateway.services import alias_set
from tests.fakes.vllm_upstream import FakeVllm

from .job_support import adapter, done_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_watch_change_and_stop_a_canary(
    logged_in_page: Any, people: dict[str, Any], providers: dict[str, Any], vllm: FakeVllm, client: openai.OpenAI,
    tmp_path: Path,
) -> None:  # fmt: skip
    alias_set(project=people["project"], name="bot", target="openai/gpt-4o-mini", changed_by="test")
    job = done_job(people, adapter(tmp_path / "a"), judge_kind="regex", judge_options={"pattern": "refund"})
    page = logged_in_page
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"/projects/acme/distillation/{job.pk}")

    page.locator("#canary-start-percent").fill("50")
    page.locator("#canary-alias").fill("bot")
    page.locator("#canary-serve").select_option("vllm")
    page.get_by_role("button", name="Start canary").click()
    page.wait_for_selector("#canary-sides")
    assert "50% of alias" in page.locator("#canary-panel").inner_text()

    for i in range(16):
        client.chat.completions.create(model="bot", messages=[{"role": "user", "content": f"refund {i}"}])
    # The card refreshes itself every 10 s: both sides' request counts add up to what was sent.
    page.wait_for_function(
        "() => ['student', 'incumbent'].map(s => parseInt(document.querySelector('#canary-' + s + ' td.num')"
        ".textContent.replace(/,/g, '')) || 0).reduce((a, b) => a + b) === 16",
        timeout=30_000,
    )

    page.locator("#canary-percent").fill("20")
    page.get_by_role("button", name="Change").click()
    page.wait_for_function("() => document.querySelector('#canary-panel').innerText.includes('20% of alias')")
    assert Alias.objects.get(project=people["project"], name="bot").canary_percent == 20

    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("#canary-panel .badge:text('stopped')")
    assert Canary.objects.get(job=job).status == Canary.Status.STOPPED
    assert page.get_by_role("button", name="Start canary").is_visible()  # another can start
    assert problems == []
