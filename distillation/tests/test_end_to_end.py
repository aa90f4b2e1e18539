"""End to end with the real SmolLM2-135M-Instruct on the CPU (about a minute): a job runs through
the embedded worker (teacher samples, exact-match verdicts, a few LoRA steps, held-out evaluation),
is approved, and the alias then answers from `local/<student>` through /v1 (the official SDK)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from distillation import jobs
from distillation import services as S
from distillation.models import DistillationJob
from distillation.serving import forget, looks_like_student

from .job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)


def test_looks_like_student() -> None:
    assert looks_like_student("smollm2-135m-instruct-v12") and looks_like_student("qwen3-0.6b-v1")
    assert not looks_like_student("smollm2-135m-instruct") and not looks_like_student("bot-v")


def test_train_approve_and_serve(
    server_url: str,
    people: dict[str, Any],
    client: Any,
    outsider_key: str,
    providers: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.services import alias_set
    from opentracy_site.worker import start_embedded_worker

    monkeypatch.setattr(jobs, "SAMPLING_BACKOFF_S", 0.0)
    start_embedded_worker()
    teacher_alias(people, providers["openai"])
    settings = {"mode": "sft", "steps": 2, "batch_size": 2, "max_new_tokens": 6, "checkpoint_every": 10}
    job = S.job_create(
        project=people["project"], dataset_version=frozen_version(people, rows=4), teacher="teacher", n=2,
        judge={"kind": "exact"}, settings=settings, user=people["owner"],
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while job.status in ("queued", "running"):
        assert time.monotonic() < deadline, f"job stuck at {job.status} {job.phase} {job.progress}"
        time.sleep(0.5)
        job.refresh_from_db()
    assert job.status == "done", job.message
    assert len(job.metrics["history"]) == 2 and all("loss" in h for h in job.metrics["history"])
    assert (Path(job.adapter_path) / "adapter_config.json").is_file()
    ev = job.evaluation["models"]
    assert job.evaluation["held_out"] == 1 and ev["student"]["latency_ms"] > 0 and ev["base"]["latency_ms"] > 0
    assert ev["teacher"]["mean_score"] is not None

    alias_set(project=people["project"], name="support-bot", target="openai/gpt-4o", changed_by="test")
    student = S.job_approve(job=DistillationJob.objects.get(pk=job.pk), alias="support-bot", user=people["owner"])
    try:
        reply = client.chat.completions.create(
            model="support-bot", messages=[{"role": "user", "content": "Classify: refund please"}], max_tokens=5
        )
        assert reply.choices[0].message.content is not None and reply.usage.completion_tokens >= 1
        import openai

        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="local/smollm2-135m-instruct-v999", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        # Another project cannot call this project's student, by name or through an alias of its own.
        outsider = openai.OpenAI(base_url=f"{server_url}/v1", api_key=outsider_key, max_retries=0, timeout=20)
        with pytest.raises(openai.NotFoundError):
            outsider.chat.completions.create(
                model=f"local/{student.name}", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        alias_set(project=people["other_project"], name="borrowed", target=f"local/{student.name}", changed_by="t")
        with pytest.raises(openai.NotFoundError):
            outsider.chat.completions.create(
                model="borrowed", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert S.job_rollback(job=job, user=people["owner"]) == "openai/gpt-4o"
    finally:
        forget(student.name)
