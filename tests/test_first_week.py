"""A team's first week with the engine, as one browser test (Debian Chromium through Playwright)
against the live server: every step through the dashboard, the app's traffic through the official
`openai` SDK with the key read from the settings page.

Day 0: log in, create a key, point `smart` at a dear teacher (the fake OpenAI upstream priced like
gpt-4o), a support-ticket classifier sends Banking77 tickets: traces arrive live with cost and
latency. Days 2-5: clustering, a named cluster made a dataset, curated (keep, drop, one edit, a
programmatic judge run), frozen. Days 5-7: a distillation job (SmolLM2-135M student, exact judge, a
few CPU LoRA steps) started in the wizard, followed live, its evaluation read, approved onto
`smart`. After: the same app is answered by the student and the overview shows the cost per 1k
requests before and after. One PNG per step under OPENTRACY_TEST_ARTIFACTS (default
var/test-artifacts/first-week); any browser console error fails the test."""

from __future__ import annotations

import csv
import os
import re
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

BANKING = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "banking77" / "test.csv"
INTENTS = ("exchange_rate", "pin_blocked", "top_up_failed", "card_arrival")
# Clustering asks at least 15 prompts of a group (datasets.clustering.min_cluster_size_for).
PER_INTENT = 20
SYSTEM = "You classify support tickets of a mobile bank. Answer with the intent label only."
TEACHER = "openai/scripted-teacher"
CHATTY = "(the customer asks about this)"
ARTIFACTS = Path(os.environ.get("OPENTRACY_TEST_ARTIFACTS", "var/test-artifacts/first-week"))


def tickets() -> list[tuple[str, str]]:
    """(intent, text): the first PER_INTENT Banking77 test tickets of each intent."""
    seen: dict[str, int] = {}
    out = []
    with BANKING.open() as f:
        for row in csv.DictReader(f):
            intent = row["category"]
            if intent in INTENTS and seen.get(intent, 0) < PER_INTENT:
                seen[intent] = seen.get(intent, 0) + 1
                out.append((intent, row["text"]))
    return out


def the_teacher(labels: dict[str, str]) -> Any:
    """The dear model's answer: the ticket's label; two tickets per intent get a chatty answer
    (one a person fixes by hand, one the judge flags)."""
    chatty = {text for intent in INTENTS for text in [t for t, i in labels.items() if i == intent][:2]}

    def reply(body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        text = text if isinstance(text, str) else " ".join(p.get("text", "") for p in text)
        label = labels.get(text, "unknown")
        return f"{label} {CHATTY}" if text in chatty else label

    return reply


def classify(client: openai.OpenAI, text: str) -> Any:
    """The app: one ticket, one label, through `smart` (it never changes model name)."""
    return client.chat.completions.with_raw_response.create(
        model="smart",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        max_tokens=8,
        temperature=0,
    )


class Steps:
    """One screenshot per step; console errors and page errors collected for the final check."""

    def __init__(self, page: Any) -> None:
        self.page, self.n = page, 0
        self.errors: list[str] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def shot(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(ARTIFACTS / f"{self.n:02d}-{name}.png"), full_page=True)
        assert self.errors == [], self.errors


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_the_first_week(
    chromium: Any, server_url: str, people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets.models import Cluster, ClusteringRun, Dataset, DatasetRow, JudgeRun, Verdict
    from distillation import jobs
    from distillation.models import DistillationJob, Student
    from distillation.serving import forget
    from gateway.models import ModelPrice
    from opentracy_site.worker import start_embedded_worker
    from traces.selectors import trace_get

    monkeypatch.setattr(jobs, "SAMPLING_BACKOFF_S", 0.0)
    start_embedded_worker()  # embedded: the in-process worker; distributed: a worker on REDIS_URL
    started = time.monotonic()
    labels = {text: intent for intent, text in tickets()}
    providers["openai"].scripts["scripted-teacher"] = [the_teacher(labels)]
    # Priced like gpt-4o: USD 2.50 / 10.00 per million tokens in / out.
    ModelPrice.objects.create(model=TEACHER, input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal("10.00"))
    page = chromium.new_context(base_url=server_url, viewport={"width": 1280, "height": 900}).new_page()
    steps = Steps(page)

    # ---- Day 0: log in, a key (read once), `smart` → the teacher.
    page.goto("/projects/acme/overview")
    page.wait_for_url("**/accounts/login/?next=/projects/acme/overview")
    page.get_by_label("Username or e-mail").fill("owner@example.com")
    page.get_by_label("Password").fill("pw-owner-123")
    steps.shot("login")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/projects/acme/overview")
    base_url = page.locator("#base-url").inner_text()
    assert base_url == f"{server_url}/v1"
    steps.shot("empty-overview")
    page.get_by_role("link", name="Settings → API keys").click()
    page.locator("#keys").get_by_label("Name").fill("ticket-classifier")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("ot-")
    steps.shot("api-key")
    aliases = page.locator("#aliases")
    aliases.get_by_label("Name").fill("smart")
    aliases.get_by_label("Target").fill(TEACHER)
    aliases.get_by_role("button", name="Save alias").click()
    page.wait_for_selector("#alias-smart")
    assert TEACHER in page.locator("#alias-smart").inner_text()
    steps.shot("alias-smart")

    # The app, with Live on: traces arrive without a reload, with cost and latency.
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    page.goto("/projects/acme/traces")
    page.get_by_role("button", name="Live: off").click()
    page.wait_for_function("() => document.querySelector('#live-tail [aria-pressed=true]') !== null")
    page.wait_for_timeout(500)  # the socket joins its group right after connecting
    before_ids = []
    for text in labels:
        reply = classify(client, text)
        assert reply.headers["x-opentracy-model"] == TEACHER
        assert reply.parse().choices[0].message.content.startswith(labels[text])
        before_ids.append(reply.headers["x-opentracy-trace-id"])
    for trace_id in before_ids[-5:]:
        row = page.locator(f"#trace-{trace_id}")
        row.wait_for(timeout=15_000)
        cells = row.inner_text()
        assert re.search(r"\$0\.000\d+", cells) and re.search(r"\b[\d.]+ ms\b", cells), cells
    assert page.url.endswith("/projects/acme/traces")  # live: no reload
    steps.shot("traces-live")
    teacher_trace = wait_for(
        lambda: trace_get(project_id=people["project"].id, trace_id=uuid.UUID(before_ids[0])), 10, "trace"
    )
    assert teacher_trace["cost_total_usd"] > 0 and teacher_trace["latency_ms"] > 0

    # ---- Days 2-5: clusters, named; one becomes a dataset.
    page.goto("/projects/acme/clusters")
    page.get_by_role("button", name="Start clustering").click()
    page.wait_for_selector("#clusters", timeout=240_000)  # the finished run reloads the page
    run = ClusteringRun.objects.get()
    assert run.status == ClusteringRun.Status.DONE, run.message
    clusters = list(Cluster.objects.filter(run=run).order_by("-size"))
    assert len(clusters) >= 2
    for c in clusters:
        shown = page.locator(f"#cluster-{c.pk} input[name=name]").input_value()
        assert shown and shown == c.name
    steps.shot("clusters")
    picked = clusters[0]
    page.locator(f"#cluster-{picked.pk}").get_by_role("link", name="details").click()
    page.wait_for_url(f"**/clusters/{picked.pk}")
    assert picked.name in page.locator("#name").inner_text() or picked.name in page.locator("h1").inner_text()
    steps.shot("cluster")
    page.go_back()
    page.locator(f"#cluster-{picked.pk} input[name=clusters]").check()
    page.get_by_label("dataset name").fill("Tickets")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url(re.compile(r".*/datasets/\d+$"))
    dataset = Dataset.objects.get(name="Tickets")
    rows = list(DatasetRow.objects.filter(version__dataset=dataset).order_by("pk"))
    assert len(rows) == picked.size

    # Curate: keep one, edit a chatty answer to its label, judge, drop what the judge flags.
    chatty = [r for r in rows if CHATTY in r.response]
    assert len(chatty) >= 2, [r.response for r in rows]  # one to edit, one for the judge to flag
    plain = next(r for r in rows if CHATTY not in r.response)
    page.locator(f"#row-{plain.pk}").get_by_role("button", name="Keep").click()
    page.wait_for_selector(f"#row-{plain.pk}.status-keep")
    fixed = chatty[0]
    label = fixed.response.replace(CHATTY, "").strip()
    page.locator(f"#row-{fixed.pk}").get_by_role("link", name="Edit").click()
    page.locator(f"#edit-{fixed.pk}").fill(label)
    page.locator(f"#row-{fixed.pk}").get_by_role("button", name="Save (Ctrl+Enter)").click()
    page.wait_for_selector(f"#row-{fixed.pk} .ds-answer.edited")
    fixed.refresh_from_db()
    assert fixed.edited_response == label and fixed.target == label
    steps.shot("curation")
    judge = page.locator("#judge-form")
    judge.locator("select[name=kind]").select_option("regex")
    judge.locator("input[name=pattern]").fill(rf"^({'|'.join(INTENTS)})$")
    judge.get_by_role("button", name="Start judge run").click()
    judge_run = wait_for(lambda: JudgeRun.objects.filter(version__dataset=dataset).first(), 10, "judge run")
    wait_for(lambda: JudgeRun.objects.get(pk=judge_run.pk).finished_at, 120, "the judge run")
    page.reload()
    verdicts = {v.row_id: v for v in Verdict.objects.filter(row__version__dataset=dataset)}
    assert len(verdicts) == len(rows)
    flagged = [pk for pk, v in verdicts.items() if not v.passed]
    assert sorted(flagged) == sorted(r.pk for r in chatty[1:])  # the edit passes, the others do not
    assert verdicts[fixed.pk].passed and verdicts[plain.pk].passed
    for pk in flagged:
        page.locator(f"#row-{pk}").get_by_role("button", name="Drop").click()
        page.wait_for_selector(f"#row-{pk}.status-drop")
    assert page.locator(f"#row-{fixed.pk} .verdict.passed").count() == 1
    steps.shot("judged")
    page.once("dialog", lambda d: d.accept())
    page.locator("#freeze-form").get_by_role("button").click()
    page.wait_for_load_state()
    version = wait_for(lambda: dataset.versions.filter(frozen_at__isnull=False).first(), 10, "the frozen version")

    # ---- Days 5-7: the wizard, the job live, its evaluation, Approve.
    page.goto("/projects/acme/distillation")
    page.click("#new-job")
    page.wait_for_selector("#wizard[data-step='1']")
    page.select_option("#w-version", str(version.pk))
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='2']")
    page.fill("#w-teacher", "smart")
    assert "smollm2-135m" in page.locator("#w-student").input_value().lower()
    page.fill("#w-n", "2")
    page.select_option("#w-judge-kind", "exact")
    page.click("button[value=next]")
    page.wait_for_selector("#wizard[data-step='3']")
    page.select_option("#w-mode", "sft")
    for name, value in {"steps": "2", "batch_size": "2", "max_new_tokens": "6"}.items():
        page.fill(f"#w-{name}", value)
    page.click("button[value=next]")
    page.wait_for_selector("#wizard-estimate")
    steps.shot("wizard-estimate")
    page.click("#wizard-start button")
    page.wait_for_url(re.compile(r".*/distillation/\d+$"))
    job = DistillationJob.objects.get()
    page.wait_for_selector("#job-progress[data-live]", timeout=30_000)  # the progress socket's first push
    steps.shot("job-running")
    page.wait_for_selector("#job-approve", timeout=480_000)  # the finished job reloads the page
    job.refresh_from_db()
    assert job.status == "done", job.message
    assert [h["step"] for h in job.metrics["history"]] == [1, 2]
    evaluation = page.locator("#job-evaluation").inner_text()
    assert {"student", "base", "teacher"} <= set(job.evaluation["models"]) and "student" in evaluation
    assert job.evaluation["models"]["student"]["cost_per_1k_usd"] == 0.0
    steps.shot("job-done")
    page.get_by_label("Point alias").fill("smart")
    page.get_by_label("served").select_option("local")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_selector(".messages li.success")
    student = Student.objects.get()
    assert f"Alias smart now serves {student.model}" in page.locator(".messages").inner_text()
    steps.shot("approved")

    # ---- After: the same app, still model="smart", answered by the student, traced as such.
    try:
        after_ids = []
        for text in list(labels)[:3]:
            reply = classify(client, text)
            assert reply.headers["x-opentracy-model"] == student.model
            assert reply.parse().choices[0].message.content is not None
            after_ids.append(reply.headers["x-opentracy-trace-id"])
        traced = [
            wait_for(lambda t=t: trace_get(project_id=people["project"].id, trace_id=uuid.UUID(t)), 10, "trace")
            for t in after_ids
        ]
        assert {t["resolved_model"] for t in traced} == {student.model}
        assert all(t["alias"] == "smart" and not t["cost_total_usd"] for t in traced)

        # The overview: cost per 1k requests on `smart`, before and after the approval.
        teacher_traces = [trace_get(project_id=people["project"].id, trace_id=uuid.UUID(t)) for t in before_ids]
        dear = sum(t["cost_total_usd"] for t in teacher_traces if t)
        assert len(teacher_traces) == len(before_ids) and all(teacher_traces)
        page.goto("/projects/acme/overview")
        tile = page.locator("#cost-per-1k")
        tile.wait_for()
        assert float(tile.get_attribute("data-before")) == pytest.approx(1000 * dear / len(before_ids), rel=1e-4)
        assert float(tile.get_attribute("data-after")) == 0.0
        assert tile.locator("[data-p=after]").inner_text() == "$0.00"
        assert f"{len(before_ids)} requests" in tile.inner_text() and "3 requests" in tile.inner_text()
        steps.shot("overview-after")
    finally:
        forget(student.name)
    assert steps.errors == []
    print(f"first week: {time.monotonic() - started:.0f} s, screenshots in {ARTIFACTS}")
