"""Shared set-up of the distillation job tests: a frozen dataset of labelled prompts, a teacher
alias on the fake OpenAI upstream whose answers vary, and helpers to run a job's phases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import curation as C
from datasets.models import DatasetVersion
from distillation import jobs
from distillation.models import DistillationJob
from gateway.services import alias_set

LABELS = ["billing", "refund", "shipping", "billing", "account", "refund", "shipping", "billing", "account", "other"]


def frozen_version(people: dict[str, Any], *, rows: int = 10, edit_first: str = "") -> DatasetVersion:
    """`rows` prompts whose reference is their label; the first row's answer corrected by a person
    when `edit_first` is given. Returns the frozen version."""
    lines = [
        {"prompt": f"Classify ticket {i}: about {label}", "response": label, "reference": label}
        for i, label in enumerate(LABELS[:rows])
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    dataset = C.dataset_import_jsonl(project=people["project"], name="Tickets", file=data, user=people["owner"])
    version = C.open_version(dataset=dataset)
    if edit_first:
        row = version.rows.order_by("pk").first()
        assert row is not None
        C.row_edit_response(row=row, text=edit_first, user=people["owner"], revision=row.revision)
    C.version_freeze(version=version, user=people["owner"])
    version.refresh_from_db()
    assert version.frozen
    return version


def teacher_reply(body: dict[str, Any]) -> str:
    """Right label for most tickets, with some samples wrong: candidates differ in score."""
    text = body["messages"][-1]["content"]
    label = text.rsplit("about ", 1)[-1]
    teacher_reply.calls += 1  # type: ignore[attr-defined]
    return label if teacher_reply.calls % 3 else f"not {label}"  # type: ignore[attr-defined]


teacher_reply.calls = 0  # type: ignore[attr-defined]


def teacher_alias(people: dict[str, Any], fake: Any, *, target: str = "openai/scripted-teacher") -> None:
    alias_set(project=people["project"], name="teacher", target=target, changed_by="test")
    fake.scripts["scripted-teacher"] = [teacher_reply]


def teacher_requests(fake: Any) -> int:
    return sum(1 for r in fake.requests if (r.get("body") or {}).get("model") == "scripted-teacher")


def run_prepare(job: DistillationJob) -> DistillationJob:
    jobs.run_phase(job.pk, jobs.prepare, first=True)
    job.refresh_from_db()
    return job


def adapter(folder: Path, rank: int = 8) -> Path:
    """A folder vLLM accepts as a LoRA adapter (its config; the fake does not read the weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 2 * rank, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def done_job(people: dict[str, Any], path: Path, **fields: Any) -> DistillationJob:
    """A finished job (no training: the adapter folder is given); `fields` override, e.g. the judge."""
    values: dict[str, Any] = {"teacher": "openai/gpt-4o", "student": "smollm2-135m-instruct", **fields}
    return DistillationJob.objects.create(
        project=people["project"],
        dataset_version=frozen_version(people, rows=2),
        status=DistillationJob.Status.DONE,
        adapter_path=str(path),
        **values,
    )
