"""The create-job wizard's form handling (views in distillation/views.py): four server-side steps —
1 the dataset version, 2 teacher, student, N and judge, 3 training settings and the held-out
fraction, 4 the draft's estimate with Start / Back. Values travel between steps in hidden fields.

Validation is the service's own (services.job_create): each step's submit runs it in a rolled-back
transaction with the later steps' defaults, and the messages for fields of this step or an earlier
one send the person back to the step that owns them. Strings are converted to the types the service
expects where they parse; what does not parse is passed as is, so the service's message explains it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import QueryDict

from datasets.judge import CHECK_KINDS, DEFAULT_ALIAS
from datasets.models import DatasetVersion
from gateway.models import Project

from . import services, students
from .models import DistillationJob
from .trainer import TrainSettings

STEPS = (1, 2, 3, 4)
# The settings the wizard shows (the rest keep the trainer's defaults).
SETTING_FIELDS = (
    "mode", "steps", "batch_size", "grad_accum", "lr", "beta", "beta_warmup", "lora_r", "lora_alpha", "lora_dropout",
    "target_modules", "max_new_tokens", "temperature", "seed", "device",
)  # fmt: skip
FIELDS = {
    1: ("dataset_version",),
    2: ("teacher", "student", "n", "judge_kind", "judge_alias", "judge_options"),
    3: ("held_out_fraction", *SETTING_FIELDS),
}
ERROR_STEP = {"dataset_version": 1, "teacher": 2, "student": 2, "n": 2, "judge": 2}  # anything else: step 3
DEFAULT_HELD_OUT = 0.2


def defaults() -> dict[str, str]:
    """Every field's initial value, as the form shows it."""
    train = TrainSettings()
    values = {name: _show(getattr(train, name)) for name in SETTING_FIELDS}
    values.update(
        dataset_version="",
        teacher="",
        student=students.DEFAULT_STUDENT,
        n=str(services.DEFAULT_N),
        judge_kind="pointwise",
        judge_alias=DEFAULT_ALIAS,
        judge_options="",
        held_out_fraction=str(DEFAULT_HELD_OUT),
    )
    return values


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def values_from(post: QueryDict) -> dict[str, str]:
    values = defaults()
    for names in FIELDS.values():
        for name in names:
            if name in post:
                values[name] = post.get(name, "").strip()
    return values


def _number(raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        return raw  # the service names the problem


def _settings(values: dict[str, str]) -> dict[str, Any]:
    train = TrainSettings()
    out: dict[str, Any] = {}
    for name in SETTING_FIELDS:
        raw, default = values[name], getattr(train, name)
        if name == "target_modules":
            out[name] = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(default, (bool, str)) or default is None:
            out[name] = raw
        else:
            out[name] = _number(raw, type(default))
    return out


def create_kwargs(project: Project, values: dict[str, str]) -> dict[str, Any]:
    """job_create's keyword arguments; ValidationError when the version is not the project's."""
    raw = values["dataset_version"]
    versions = DatasetVersion.objects.select_related("dataset").filter(dataset__project=project)
    version = versions.filter(pk=int(raw)).first() if raw.isdigit() else None
    if version is None:
        raise ValidationError({"dataset_version": "Choose a frozen dataset version of this project."})
    judge: dict[str, Any] = {"kind": values["judge_kind"], "alias": values["judge_alias"]}
    if values["judge_options"]:
        try:
            judge["options"] = json.loads(values["judge_options"])
        except json.JSONDecodeError as exc:
            raise ValidationError({"judge": f"The judge's options must be a JSON object ({exc.msg})."}) from None
    return {
        "project": project,
        "dataset_version": version,
        "teacher": values["teacher"],
        "student": values["student"],
        "n": _number(values["n"], int),
        "judge": judge,
        "settings": _settings(values),
        "held_out_fraction": _number(values["held_out_fraction"], float),
    }


def errors_by_step(exc: ValidationError) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    items = exc.message_dict.items() if hasattr(exc, "error_dict") else [("__all__", exc.messages)]
    for field, messages in items:
        step = ERROR_STEP.get(field, 1 if field == "__all__" else 3)
        out.setdefault(step, {})[field] = " ".join(messages)
    return out


def check(project: Project, values: dict[str, str], *, through: int) -> tuple[int, dict[str, str]] | None:
    """The first step up to `through` whose fields the service refuses, with the messages; None
    when steps 1..through are fine. Nothing is stored."""
    try:
        with transaction.atomic():
            services.job_create(**create_kwargs(project, values), start=False)
            transaction.set_rollback(True)
    except ValidationError as exc:
        failing = {step: errs for step, errs in errors_by_step(exc).items() if step <= through}
        if failing:
            first = min(failing)
            return first, failing[first]
    return None


def draft_create(project: Project, values: dict[str, str], user: Any) -> DistillationJob:
    """The DRAFT job with its estimate (ValidationError as the service raises it)."""
    with transaction.atomic():
        return services.job_create(**create_kwargs(project, values), user=user, start=False)


def choices(project: Project) -> dict[str, Any]:
    """What the steps offer: frozen versions, aliases, students, judge kinds, mode names."""
    from gateway.selectors import aliases_for_project

    versions = (
        DatasetVersion.objects.select_related("dataset")
        .filter(dataset__project=project, frozen_at__isnull=False)
        .order_by("dataset__name", "-number")
    )
    return {
        "versions": list(versions),
        "aliases": [a.name for a in aliases_for_project(project=project)],
        "students": [dataclasses.asdict(s) for s in students.STUDENTS.values()],
        "judge_kinds": services.JUDGE_KINDS,
        "check_kinds": CHECK_KINDS,
        "modes": ("bond", "jbond", "sft"),
        "setting_fields": SETTING_FIELDS,
    }
