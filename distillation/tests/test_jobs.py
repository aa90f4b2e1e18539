"""Distillation jobs: creation with its estimate and validation, teacher sampling through the
engine (a scripted teacher on the fake OpenAI upstream), resuming without paying twice, judging
with a programmatic check and an LLM judge, cancel, failures, approval and rollback, and the
chained tasks through the embedded Celery worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from datasets import curation as C
from distillation import jobs
from distillation import services as S
from distillation.models import Candidate, DistillationJob, Student
from gateway.models import Alias, AliasChange
from gateway.services import alias_set

from .job_support import frozen_version, run_prepare, teacher_alias, teacher_requests

pytestmark = pytest.mark.django_db(transaction=True)

EXACT = {"kind": "exact"}
FAST = {"steps": 4, "batch_size": 2}


@pytest.fixture
def fake(people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(S, "_enqueue", lambda job_id: None)  # phases driven directly; see the worker test
    monkeypatch.setattr(jobs, "SAMPLING_BACKOFF_S", 0.0)
    fake = providers["openai"]
    fake.scripts.clear()
    teacher_alias(people, fake)
    return fake


def _job(people: dict[str, Any], version: Any, **kw: Any) -> DistillationJob:
    args: dict[str, Any] = {"teacher": "teacher", "n": 3, "judge": EXACT, "settings": FAST, **kw}
    return S.job_create(project=people["project"], dataset_version=version, user=people["owner"], **args)


def test_create_splits_and_estimates_before_anything_runs(people: dict[str, Any], fake: Any) -> None:
    version = frozen_version(people)
    alias_set(project=people["project"], name="judge", target="openai/gpt-4o-mini", changed_by="test")
    alias_set(project=people["project"], name="priced-teacher", target="openai/gpt-4o", changed_by="test")
    job = _job(people, version, teacher="priced-teacher", judge={"kind": "pointwise"}, n=4)
    assert job.status == "queued" and job.settings["steps"] == 4 and job.settings["mode"] == "bond"
    assert len(job.split["train"]) == 8 and len(job.split["held_out"]) == 2
    again = S.split_rows(S.training_rows(version), fraction=0.2, seed=0)
    assert again == job.split  # seeded: the same split every time
    est = job.estimate
    assert est["train_prompts"] == 8 and est["held_out_prompts"] == 2
    assert est["teacher"]["calls"] == 8 * 4 + 2 and est["teacher"]["usd"] > 0
    # BOND's β warm start: steps 1-2 of 4 train on the best candidate alone; steps 3-4 sample 2 answers each.
    assert est["judge"]["breakdown"] == {"candidates": 32, "student_samples": 2 * 2, "evaluation": 6}
    assert est["judge"]["calls"] == 42 and est["judge"]["usd"] > 0
    assert est["total_usd"] == pytest.approx(est["teacher"]["usd"] + est["judge"]["usd"])
    assert est["training_seconds"]["cpu"] > est["training_seconds"]["cuda"] > 0
    assert not Candidate.objects.exists()  # nothing sampled yet

    # A scripted model has no price: said so, not counted as free. A check costs no judge calls.
    draft = _job(people, version, start=False)
    assert draft.status == "draft"
    assert draft.estimate["teacher"]["usd"] is None and draft.estimate["teacher"]["note"] == "unknown price"
    assert draft.estimate["judge"]["calls"] == 0 and draft.estimate["total_usd"] is None


def test_bad_inputs_are_refused_with_clear_errors(people: dict[str, Any], fake: Any) -> None:
    version = frozen_version(people)
    open_version = C.open_version(dataset=version.dataset)
    with pytest.raises(ValidationError) as exc:
        _job(people, open_version)
    assert f"{open_version} is not frozen" in exc.value.message_dict["dataset_version"][0]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"student": "gpt-7-tiny"}, "student", "Unknown student 'gpt-7-tiny'"),
        ({"n": 1}, "n", "from 2 to"),
        ({"teacher": "nobody-knows"}, "teacher", "neither an alias"),
        ({"settings": {"steps": 0}}, "steps", "from 1 to"),
        ({"settings": {"mode": "ppo"}}, "mode", "bond, jbond, sft"),
        ({"settings": {"learning_rate": 1}}, "settings", "Unknown setting(s) learning_rate"),
        ({"judge": {"kind": "pairwise"}}, "judge", "judge.kind"),
        ({"judge": {"kind": "regex", "options": {"pattern": "("}}}, "judge", "not a valid regular expression"),
        ({"held_out_fraction": 1.5}, "held_out_fraction", "from 0"),
        ({"settings": {"teacher_base": 3}}, "teacher_base", "A model name or local path"),
    ]
    for kwargs, field, text in cases:
        with pytest.raises(ValidationError) as exc:
            _job(people, version, **kwargs)
        assert text in " ".join(exc.value.message_dict[field]), (kwargs, exc.value.message_dict)
    other = frozen_version(dict(people, project=people["other_project"]))
    with pytest.raises(ValidationError, match="No such dataset version"):
        _job(people, other)
    assert not DistillationJob.objects.filter(project=people["project"]).exists()


def test_sampling_judging_and_resume_without_paying_twice(people: dict[str, Any], fake: Any) -> None:
    version = frozen_version(people, edit_first="billing (checked by a person)")
    job = _job(people, version)
    before = teacher_requests(fake)
    job = run_prepare(job)
    assert job.status == "running" and job.phase == "judging" and job.progress == pytest.approx(0.45)
    train = job.split["train"]
    sampled = Candidate.objects.filter(job=job, index__gte=0)
    assert sampled.count() == len(train) * 3 and teacher_requests(fake) - before == len(train) * 3
    assert all(c.teacher_trace_id for c in sampled)
    assert len({c.text for c in sampled}) > 1  # the teacher's answers vary
    # Exact match against the row's reference: 1 or 0.
    for cand in sampled.select_related("row"):
        assert cand.judged and cand.score == (1.0 if cand.text == cand.row.reference else 0.0), cand.text
    # The person's correction is a top-reward candidate (when that row is in the training split).
    first = version.rows.order_by("pk")[0]
    human = Candidate.objects.filter(job=job, index=Candidate.HUMAN_INDEX)
    if first.pk in train:
        assert human.get().text == "billing (checked by a person)" and human.get().score == 1.0
    else:
        assert not human.exists()

    # Resume after losing some samples and verdicts: only the missing ones are asked for again.
    lost = list(sampled.values_list("pk", flat=True)[:4])
    Candidate.objects.filter(pk__in=lost).delete()
    Candidate.objects.filter(job=job, index__gte=0).update(judged=False, score=None)
    DistillationJob.objects.filter(pk=job.pk).update(status="queued")
    asked = teacher_requests(fake)
    job = run_prepare(job)
    assert teacher_requests(fake) - asked == 4 and sampled.count() == len(train) * 3
    assert sampled.filter(judged=True).count() == len(train) * 3

    examples = jobs.build_examples(job)
    assert len(examples) == len(train) and all(len(e.candidates) == len(e.scores) for e in examples)
    for example in examples:
        assert example.best in example.candidates
        assert example.scores[example.candidates.index(example.best)] == max(example.scores)


def test_llm_judge_scores_and_garbage_fails_the_job(people: dict[str, Any], fake: Any) -> None:
    alias_set(project=people["project"], name="judge", target="openai/scripted-judge", changed_by="test")
    seen: list[dict[str, Any]] = []

    def verdict(body: dict[str, Any]) -> str:
        seen.append(body)
        answer = body["messages"][-1]["content"].rsplit("Answer to evaluate:\n", 1)[-1]
        n = 3 if answer.startswith("not ") else 9
        return f'{{"correctness": {n}, "helpfulness": {n}, "format": {n}, "reason": "ok"}}'

    fake.scripts["scripted-judge"] = [verdict]
    job = run_prepare(_job(people, frozen_version(people, rows=4), judge={"kind": "pointwise"}))
    scores = set(Candidate.objects.filter(job=job).values_list("score", flat=True))
    assert job.status == "running" and scores <= {3.0, 9.0} and len(scores) == 2

    fake.scripts["scripted-judge"] = ["I would say 8 out of 10"]  # never JSON: asked twice, then an error
    broken = run_prepare(_job(people, frozen_version(people, rows=3), judge={"kind": "pointwise"}))
    assert broken.status == "failed" and broken.finished_at is not None
    assert "could not be judged" in broken.message and "no JSON object" in broken.message
    unjudged = Candidate.objects.filter(job=broken, judged=False)
    assert unjudged.count() == Candidate.objects.filter(job=broken).count() and all(c.error for c in unjudged)

    # Started again with a working judge: the samples are reused, only the verdicts are asked for.
    fake.scripts["scripted-judge"] = [verdict]
    asked = teacher_requests(fake)
    S.job_start(job=broken)
    broken = run_prepare(broken)
    assert broken.status == "running" and teacher_requests(fake) == asked
    assert not Candidate.objects.filter(job=broken, judged=False).exists()


def test_teacher_outage_fails_the_job_with_the_reason(people: dict[str, Any], fake: Any) -> None:
    alias_set(project=people["project"], name="teacher", target="openai/error-500", changed_by="test")
    job = run_prepare(_job(people, frozen_version(people, rows=3)))
    assert job.status == "failed" and job.finished_at is not None
    # The upstream's 500, or the gateway's cooldown of that target after repeated 500s (calls run in parallel).
    assert "The teacher 'teacher' failed (" in job.message and f"after {jobs.SAMPLING_ATTEMPTS}" in job.message
    assert "500: " in job.message or "`openai/error-500` is cooling down" in job.message
    assert not Candidate.objects.filter(job=job).exists()


def test_cancel(people: dict[str, Any], fake: Any) -> None:
    version = frozen_version(people, rows=3)
    queued = S.job_cancel(job=_job(people, version))
    assert queued.status == "cancelled" and queued.message == "Cancelled before it started."
    with pytest.raises(ValidationError, match="already finished"):
        S.job_cancel(job=queued)
    running = _job(people, version)
    DistillationJob.objects.filter(pk=running.pk).update(status="running")
    running.refresh_from_db()
    assert S.job_cancel(job=running).cancel_requested
    jobs.run_phase(running.pk, jobs.prepare)
    running.refresh_from_db()
    assert running.status == "cancelled" and "Cancelled during" in running.message
    # A later phase of the chain skips a job that is no longer running.
    assert jobs.run_phase(running.pk, jobs.train) == "skipped"


def _done_job(people: dict[str, Any], version: Any, tmp_path: Path, name: str) -> DistillationJob:
    job = _job(people, version, start=False)
    adapter = tmp_path / name
    adapter.mkdir()
    DistillationJob.objects.filter(pk=job.pk).update(status="done", adapter_path=str(adapter))
    job.refresh_from_db()
    return job


def test_approve_repoints_the_alias_with_history_and_rollback(
    people: dict[str, Any], fake: Any, tmp_path: Path
) -> None:
    project, owner = people["project"], people["owner"]
    alias_set(project=project, name="support-bot", target="openai/gpt-4o", changed_by="test")
    version = frozen_version(people, rows=3)
    with pytest.raises(ValidationError, match="Only a finished job"):
        S.job_approve(job=_job(people, version, start=False), alias="support-bot", user=owner)
    first = _done_job(people, version, tmp_path, "a")
    student = S.job_approve(job=first, alias="support-bot", user=owner)
    assert student.name == "smollm2-135m-instruct-v1" and student.version == 1 and student.project == project
    assert Alias.objects.get(project=project, name="support-bot").target == "local/smollm2-135m-instruct-v1"
    change = AliasChange.objects.filter(project=project, name="support-bot")[0]
    assert (change.from_target, change.to_target, change.changed_by) == (
        "openai/gpt-4o",
        "local/smollm2-135m-instruct-v1",
        "owner@example.com",
    )
    second = S.job_approve(job=_done_job(people, version, tmp_path, "b"), alias="support-bot", user=owner)
    assert second.name == "smollm2-135m-instruct-v2"
    # Rolling back the first job's approval is refused: the alias has moved on since.
    with pytest.raises(ValidationError, match="now points at local/smollm2-135m-instruct-v2"):
        S.job_rollback(job=first, user=owner)
    assert S.job_rollback(job=second.job, user=owner) == "local/smollm2-135m-instruct-v1"
    assert S.job_rollback(job=first, user=owner) == "openai/gpt-4o"
    # Names are never reused, even after rollbacks.
    third = S.job_approve(job=_done_job(people, version, tmp_path, "c"), alias="new-alias", user=owner)
    assert third.name == "smollm2-135m-instruct-v3" and Student.objects.count() == 3
    assert AliasChange.objects.filter(name="new-alias").get().from_target == ""


def test_the_chain_runs_through_the_worker_and_never_ends_stuck(
    server_url: str, people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enqueued on commit; prepare on the default queue, train on the gpu queue (here the trainer
    is replaced by a stand-in that writes an adapter folder, so no model loads), evaluate after."""
    from distillation import trainer
    from opentracy_site.worker import start_embedded_worker

    def fake_train(**kw: Any) -> Any:
        for step in range(1, kw["settings"].steps + 1):
            kw["on_step"]({"step": step, "loss": 1.0 / step})
        kw["out_dir"].mkdir(parents=True, exist_ok=True)
        return trainer.TrainResult(adapter_dir=kw["out_dir"], steps=kw["settings"].steps, seconds=0.1, device="cpu")

    def fake_generate(*, base: str, adapter_dir: Any, messages: list[Any], max_new_tokens: int = 64) -> str:
        label = messages[-1]["content"].rsplit("about ", 1)[-1]
        return label if adapter_dir else "hello"

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(trainer, "generate", fake_generate)
    monkeypatch.setattr(jobs, "SAMPLING_BACKOFF_S", 0.0)
    start_embedded_worker()
    fake = providers["openai"]
    teacher_alias(people, fake)
    job = _job(people, frozen_version(people, rows=5), n=2)
    deadline = time.monotonic() + 60
    while job.status in ("queued", "running"):
        assert time.monotonic() < deadline, f"job stuck at {job.status} {job.phase} {job.progress}"
        time.sleep(0.1)
        job.refresh_from_db()
    assert job.status == "done", job.message
    assert job.progress == 1.0 and [h["step"] for h in job.metrics["history"]] == [1, 2, 3, 4]
    ev = job.evaluation
    assert ev["held_out"] == 1 and ev["models"]["student"]["mean_score"] == 1.0
    assert ev["models"]["base"]["mean_score"] == 0.0 and ev["agreement"]["base"] == 0.0
    assert sum(ev["student_vs_teacher"].values()) == 1 and ev["models"]["student"]["cost_per_1k_usd"] == 0.0
    assert Path(job.adapter_path).is_dir()


def test_settings_clean_fills_defaults_and_keeps_teacher_base_optional() -> None:
    clean = S.settings_clean({})
    assert clean["teacher_base"] is None and clean["mode"] == "bond" and clean["target_modules"]
    assert S.settings_clean({"teacher_base": " smollm2-135m-instruct "})["teacher_base"] == "smollm2-135m-instruct"
    assert S.settings_clean({"teacher_base": ""})["teacher_base"] is None
    # The schedules' fractions are refused out of range at creation, not when training starts.
    with pytest.raises(ValidationError) as refused:
        S.settings_clean({"beta_warmup": 1.5, "lr_warmup": -0.1, "lr_decay": "yes"})
    assert set(refused.value.message_dict) == {"beta_warmup", "lr_warmup", "lr_decay"}
    assert refused.value.message_dict["beta_warmup"] == ["Must be from 0 to 1."]
