"""Distillation writes: create a job (everything validated, the cost and time estimated before
anything runs), start, cancel, approve (a versioned Student and an alias re-pointed at it through
the alias history) and roll back. The job's phases run in distillation/jobs.py."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from datasets.curation import acting_user
from datasets.judge import CHECK_KINDS, DEFAULT_ALIAS, POINTWISE_SYSTEM, _option_errors
from datasets.models import DatasetRow, DatasetVersion
from gateway.models import Project
from gateway.resolve import parse_target
from gateway.selectors import alias_get
from opentracy_site import progress as job_progress

from . import students
from .approval import (  # noqa: F401  (re-exported: the approving half of the services)
    Rollback,
    ServingFailed,
    job_approve,
    job_rollback,
    job_rollback_report,
    student_name_base,
)
from .models import DistillationJob

JUDGE_KINDS = ("pointwise", *CHECK_KINDS)  # pairwise needs a second model per candidate: not offered
MAX_N = 32
DEFAULT_N = 4
CHARS_PER_TOKEN = 4  # rough, for estimates only
JUDGE_REPLY_TOKENS = 60
TEACHER_REPLY_TOKENS_DEFAULT = 200


# ---------------------------------------------------------------- validation


def settings_clean(raw: dict[str, Any] | None) -> dict[str, Any]:
    """TrainSettings fields with defaults filled in; ValidationError naming each bad one."""
    from .trainer import TrainSettings  # a cheap import: the trainer loads torch lazily

    raw = dict(raw or {})
    defaults = TrainSettings()
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    errors: dict[str, str] = {}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        errors["settings"] = f"Unknown setting(s) {', '.join(unknown)}; use {', '.join(fields)}."
    out: dict[str, Any] = {}
    for name in fields:
        default = getattr(defaults, name)
        value = raw.get(name, default)
        try:
            out[name] = _coerce(name, value, default)
        except ValueError as exc:
            errors[name] = str(exc)
    if errors:
        raise ValidationError(errors)
    return out


_RANGES: dict[str, tuple[float, float]] = {
    "beta": (0.0, 1.0),
    "beta_warmup": (0.0, 1.0),
    "lr_warmup": (0.0, 1.0),
    "steps": (1, 100_000),
    "batch_size": (1, 512),
    "grad_accum": (1, 512),
    "lr": (1e-8, 1.0),
    "lora_r": (1, 1024),
    "lora_alpha": (1, 4096),
    "lora_dropout": (0.0, 0.9),
    "max_new_tokens": (1, 4096),
    "temperature": (0.0, 5.0),
    "seed": (0, 2**31 - 1),
    "checkpoint_every": (1, 100_000),
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name == "mode":
        if value not in ("bond", "jbond", "sft"):
            raise ValueError("Use one of bond, jbond, sft.")
        return value
    if name == "device":
        if not isinstance(value, str) or not (value in ("auto", "cpu", "mps") or value.startswith("cuda")):
            raise ValueError("Use auto, cpu, cuda, cuda:<n> or mps.")
        return value
    if name == "teacher_base":  # optional: a local teacher with the student's tokenizer (name or path)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise ValueError("A model name or local path, or null.")
        return value.strip()
    if name == "target_modules":
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError('A non-empty list of module names, e.g. ["q_proj", "v_proj"].')
        return list(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("Must be true or false.")
        return value
    low, high = _RANGES.get(name, (float("-inf"), float("inf")))
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"Must be an integer from {low:g} to {high:g}.")
        number: float = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Must be a number from {low:g} to {high:g}.")
        number = float(value)
    if not low <= number <= high:
        raise ValueError(f"Must be from {low:g} to {high:g}.")
    return number


def training_rows(version: DatasetVersion) -> list[int]:
    """The version's rows that are not dropped, by id."""
    return list(version.rows.exclude(status=DatasetRow.Status.DROP).order_by("pk").values_list("pk", flat=True))


def split_rows(row_ids: list[int], *, fraction: float, seed: int) -> dict[str, list[int]]:
    """A seeded shuffle: the same rows, fraction and seed always give the same split. At least one
    row is held out when the fraction is above 0 and there are two rows or more."""
    ids = sorted(row_ids)
    random.Random(seed).shuffle(ids)  # not for security: a reproducible split
    held = round(len(ids) * fraction)
    if fraction > 0 and len(ids) >= 2:
        held = max(1, held)
    held = min(held, len(ids) - 1)
    return {"train": sorted(ids[held:]), "held_out": sorted(ids[:held])}


# ---------------------------------------------------------------- estimate


def _price_per_call(project: Project, model: str, prompt: int, completion: int) -> float | None:
    """USD of one call to `model` (an alias or provider/model), or None when no price is known."""
    from traces.cost import compute_cost

    alias = alias_get(project=project, name=model)
    target = parse_target(alias.target if alias else model)
    if target is None:
        return None
    return compute_cost(
        project_id=project.pk,
        provider=target.provider,
        model=target.model,
        prompt=prompt,
        completion=completion,
        cached=0,
    )[2]


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def _messages_text(messages: Any) -> str:
    parts = []
    for m in messages or []:
        content = m.get("content") if isinstance(m, dict) else ""
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return "\n".join(parts)


def _money(calls: int, per_call: float | None) -> dict[str, Any]:
    if calls == 0:
        return {"calls": 0, "usd": 0.0}
    if per_call is None:
        return {"calls": calls, "usd": None, "note": "unknown price"}
    return {"calls": calls, "usd": round(calls * per_call, 6)}


def estimate_compute(
    *,
    project: Project,
    version: DatasetVersion,
    split: dict[str, list[int]],
    teacher: str,
    n: int,
    judge_kind: str,
    judge_alias: str,
    settings: dict[str, Any],
    student: students.StudentBase,
) -> dict[str, Any]:
    """Calls, USD and training time before anything runs. Tokens are estimated from characters
    (4 per token); the teacher's answer length from the rows' targets."""
    rows = {r.pk: r for r in version.rows.filter(pk__in=split["train"] + split["held_out"])}
    train = [rows[i] for i in split["train"] if i in rows]
    prompt_tokens = [_tokens(_messages_text(r.messages)) for r in train] or [1]
    answer_tokens = [_tokens(r.target) for r in train if r.target] or [TEACHER_REPLY_TOKENS_DEFAULT]
    avg_prompt = sum(prompt_tokens) / len(prompt_tokens)
    avg_answer = sum(answer_tokens) / len(answer_tokens)
    held = len(split["held_out"])
    teacher_calls = len(train) * n + held  # + one teacher answer per held-out prompt in the evaluation
    teacher_usd = _price_per_call(project, teacher, round(avg_prompt), round(avg_answer))

    from .trainer import TrainSettings, backward_steps  # a cheap import: the trainer loads torch lazily

    # Under BOND only the steps past the β warm start sample the student (and ask the judge).
    sampling_steps = backward_steps(TrainSettings(**settings)) if settings["mode"] in ("bond", "jbond") else 0
    per_step = settings["batch_size"] * settings["grad_accum"]  # examples read per optimizer step
    llm_judge = judge_kind == "pointwise"
    judge_calls = {
        "candidates": len(train) * n,
        "student_samples": sampling_steps * per_step,
        "evaluation": held * 3,  # student, teacher and the untrained base, each scored
    }
    total_judge = sum(judge_calls.values()) if llm_judge else 0
    judge_prompt = _tokens(POINTWISE_SYSTEM) + round(avg_prompt) + round(avg_answer)
    judge_usd = _price_per_call(project, judge_alias, judge_prompt, JUDGE_REPLY_TOKENS) if llm_judge else 0.0

    # Training: each step reads batch × grad_accum examples: the best candidate alone (SFT, and BOND's
    # warm start), or all N candidates plus a sampled answer, whose token-by-token sampling costs
    # about as much again (BOND past its warm start).
    sft_step = per_step * (avg_prompt + avg_answer)
    bond_step = per_step * ((n + 1) * (avg_prompt + avg_answer) + settings["max_new_tokens"] * 2)
    total_tokens = (settings["steps"] - sampling_steps) * sft_step + sampling_steps * bond_step
    tokens_per_step = total_tokens / settings["steps"]
    scale = students.student_params_m(student) / 135
    seconds = {
        device: round(total_tokens * scale / tps, 2)
        for device, tps in students.TOKENS_PER_S_135M.items()
        if device != "mps"
    }
    teacher_money = _money(teacher_calls, teacher_usd)
    judge_money: dict[str, Any] = (
        _money(total_judge, judge_usd) if llm_judge else {"calls": 0, "usd": 0.0, "note": "programmatic"}
    )
    known: list[float | None] = [teacher_money["usd"], judge_money["usd"]]
    return {
        "train_prompts": len(train),
        "held_out_prompts": held,
        "n": n,
        "teacher": {**teacher_money, "model": teacher},
        "judge": {**judge_money, "kind": judge_kind, "alias": judge_alias, "breakdown": judge_calls},
        "total_usd": None if None in known else round(sum(k for k in known if k is not None), 6),
        "training_seconds": seconds,
        "tokens_per_step": round(tokens_per_step),
        "assumptions": f"{CHARS_PER_TOKEN} characters per token; throughput per device for a 135M model "
        f"{students.TOKENS_PER_S_135M} tokens/s, scaled by parameter count.",
    }


# ---------------------------------------------------------------- jobs


def job_create(
    *,
    project: Project,
    dataset_version: DatasetVersion,
    teacher: str,
    student: str = students.DEFAULT_STUDENT,
    n: int = DEFAULT_N,
    judge: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    held_out_fraction: float = 0.2,
    user: Any = None,
    start: bool = True,
) -> DistillationJob:
    """A job with its estimate. start=True queues it (on commit); start=False leaves a draft."""
    errors: dict[str, str] = {}
    if dataset_version.dataset.project_id != project.pk:
        errors["dataset_version"] = "No such dataset version in this project."
    elif not dataset_version.frozen:
        errors["dataset_version"] = (
            f"{dataset_version} is not frozen: freeze it first, so the job trains on rows that no longer change."
        )
    teacher = (teacher or "").strip()
    if not teacher:
        errors["teacher"] = "Name the teacher: a model (provider/model) or an alias."
    elif alias_get(project=project, name=teacher) is None and parse_target(teacher) is None:
        errors["teacher"] = f"{teacher!r} is neither an alias of this project nor a known provider/model."
    base = students.student_get(student)
    if base is None:
        names = ", ".join(students.student_names())
        errors["student"] = f"Unknown student {student!r}; use one of {names}, or a local path."
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_N:
        errors["n"] = f"N must be an integer from 2 to {MAX_N} (best-of-N needs at least two samples)."
    judge = dict(judge or {})
    judge_kind = str(judge.pop("kind", "pointwise"))
    judge_alias = str(judge.pop("alias", "") or "")
    judge_options = judge.pop("options", None) or {}
    if judge:
        errors["judge"] = f"Unknown judge field(s) {', '.join(sorted(judge))}; use kind, alias, options."
    elif judge_kind not in JUDGE_KINDS:
        errors["judge"] = f"judge.kind: use one of {', '.join(JUDGE_KINDS)}."
    elif not isinstance(judge_options, dict):
        errors["judge"] = "judge.options must be an object."
    elif problem := _option_errors(judge_kind, judge_options):
        errors["judge"] = problem
    if judge_kind == "pointwise":
        judge_alias = judge_alias or DEFAULT_ALIAS
    if (
        isinstance(held_out_fraction, bool)
        or not isinstance(held_out_fraction, (int, float))
        or not (0 <= held_out_fraction < 1)
    ):
        errors["held_out_fraction"] = "A number from 0 up to (not including) 1."
    try:
        clean = settings_clean(settings)
    except ValidationError as exc:
        errors.update({k: " ".join(v) for k, v in exc.message_dict.items()})
        clean = {}
    if errors:
        raise ValidationError(errors)
    assert base is not None
    split = split_rows(training_rows(dataset_version), fraction=float(held_out_fraction), seed=clean["seed"])
    if not split["train"]:
        raise ValidationError({"dataset_version": f"{dataset_version} has no rows to train on (all dropped?)."})
    estimate = estimate_compute(
        project=project,
        version=dataset_version,
        split=split,
        teacher=teacher,
        n=n,
        judge_kind=judge_kind,
        judge_alias=judge_alias,
        settings=clean,
        student=base,
    )
    job = DistillationJob.objects.create(
        project=project,
        dataset_version=dataset_version,
        teacher=teacher,
        student=student,
        n=n,
        judge_kind=judge_kind,
        judge_alias=judge_alias,
        judge_options=judge_options,
        settings=clean,
        held_out_fraction=float(held_out_fraction),
        split=split,
        estimate=estimate,
        status=DistillationJob.Status.QUEUED if start else DistillationJob.Status.DRAFT,
        created_by=acting_user(user),
    )
    if start:
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from .tasks import enqueue_job

    enqueue_job(job_id)


def job_start(*, job: DistillationJob) -> DistillationJob:
    """Queue a draft, or resume a failed or cancelled job: candidates already sampled and judged are
    kept, so nothing is paid for twice."""
    startable = [DistillationJob.Status.DRAFT, DistillationJob.Status.FAILED, DistillationJob.Status.CANCELLED]
    if job.status not in startable:
        raise ValidationError(f"The job is {job.status}: only a draft, failed or cancelled job can be started.")
    DistillationJob.objects.filter(pk=job.pk, status__in=startable).update(
        status=DistillationJob.Status.QUEUED, cancel_requested=False, message="", finished_at=None
    )
    transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job


def job_draft_delete(*, job: DistillationJob) -> None:
    """A draft nobody started (the wizard's Back) is removed; any other job is kept."""
    if job.status != DistillationJob.Status.DRAFT:
        raise ValidationError(f"The job is {job.status}: only a draft can be discarded.")
    DistillationJob.objects.filter(pk=job.pk, status=DistillationJob.Status.DRAFT).delete()


def job_cancel(*, job: DistillationJob) -> DistillationJob:
    """A queued or draft job is cancelled at once; a running one at its next check (between
    teacher calls, verdicts, training steps or evaluated prompts)."""
    if job.finished:
        raise ValidationError(f"The job already finished ({job.status}).")
    job_progress.cancel(job, "distillation", at_once=[DistillationJob.Status.QUEUED, DistillationJob.Status.DRAFT])
    return job
