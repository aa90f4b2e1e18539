"""Approving a trained student and rolling the approval back (re-exported by services).

Approval registers a Student named `<base>-v<n>` (n from StudentCounter: never reused, even after
a failed approval or a deleted project) and re-points an alias at it through the alias history.
Serving is `local` (in-process, distillation/serving.py) or `vllm` (the adapter loaded into the
project's vLLM server first; the alias only moves once the load succeeded)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from datasets.curation import acting_user
from gateway.models import AliasChange
from gateway.selectors import alias_get
from gateway.services import alias_delete, alias_rollback, alias_set

from . import vllm
from .models import DistillationJob, Student, StudentCounter

logger = logging.getLogger(__name__)
SERVING = tuple(Student.Serving.values)


class ServingFailed(Exception):
    """The student could not be put in service (vLLM refused or was unreachable); nothing changed."""


@dataclass(frozen=True)
class Rollback:
    target: str  # the alias's target now ('' when the undo removed it)
    warnings: list[str] = field(default_factory=list)  # e.g. an adapter vLLM did not unload


def student_name_base(student: str) -> str:
    return Path(student).stem.lower() if Path(student).is_absolute() else student


def _who(user: Any) -> str:
    if user is None:
        return "distillation"
    get = getattr(user, "get_username", None)
    return str(get()) if get else str(user)


def next_version(prefix: str) -> int:
    """Hand out the prefix's next version number; committed at once, so it is never handed out
    again whatever happens to the approval that took it."""
    for _ in range(5):  # two first approvals of a prefix at once: one creates the row, the other retries
        try:
            with transaction.atomic():
                # UPDATE first: it takes the row lock (Postgres) or the write lock (SQLite) before reading.
                if StudentCounter.objects.filter(prefix=prefix).update(last=F("last") + 1):
                    return StudentCounter.objects.get(prefix=prefix).last
                return StudentCounter.objects.create(prefix=prefix, last=1).last
        except IntegrityError:
            continue
    raise ValidationError("Could not pick a student version number; try again.")


def job_approve(*, job: DistillationJob, alias: str, user: Any = None, serve: str | None = None) -> Student:
    """Register the job's adapter as a Student and re-point `alias` at `<serve>/<name>`; the change
    is recorded in the alias history. serve=None takes OPENTRACY_STUDENT_SERVING. With "vllm" the
    adapter is loaded into the project's vLLM server(s) first: ServingFailed when that fails, with
    the alias and the students untouched."""
    alias = (alias or "").strip()
    serve = serve or settings.OPENTRACY_STUDENT_SERVING
    if not alias:
        raise ValidationError({"alias": "Name the alias to point at the student."})
    if serve not in SERVING:
        raise ValidationError({"serve": f"Serve the student with one of {', '.join(SERVING)}."})
    if job.status != DistillationJob.Status.DONE or not job.adapter_path:
        raise ValidationError(f"Only a finished job with a trained adapter can be approved (this one is {job.status}).")
    if not Path(job.adapter_path).exists():
        raise ValidationError(f"The job's adapter is gone from {job.adapter_path}.")
    if serve == Student.Serving.VLLM:
        try:
            vllm.servers(job.project)  # a missing server is the caller's to fix: checked before a number is taken
        except vllm.VllmNotConfigured as exc:
            raise ValidationError({"serve": str(exc)}) from None
    prefix = student_name_base(job.student)
    version = next_version(prefix)
    name = f"{prefix}-v{version}"
    if serve == Student.Serving.VLLM:
        # Outside any transaction: a slow load must not hold database locks. A failure burns the number.
        try:
            vllm.adapter_load(project=job.project, name=name, path=job.adapter_path)
        except (vllm.VllmError, vllm.VllmNotConfigured) as exc:
            problem = f"The student {name} could not be loaded into vLLM, so {alias!r} was not changed: {exc}"
            raise ServingFailed(problem) from None
    try:
        with transaction.atomic():
            current = alias_get(project=job.project, name=alias)
            student = Student.objects.create(
                project=job.project,
                job=job,
                base=job.student,
                adapter_path=job.adapter_path,
                version=version,
                name=name,
                alias=alias,
                replaced_target=current.target if current else "",
                serving=serve,
                created_by=acting_user(user),
            )
            alias_set(project=job.project, name=alias, target=student.model, changed_by=_who(user))
    except Exception:
        if serve == Student.Serving.VLLM:  # nothing half-done: the adapter goes again
            vllm.adapter_unload(project=job.project, name=name)
        raise
    from routing.learning import student_approved  # numpy/scipy: not at import time

    student_approved(student=student)  # joins the routing policies that route to its teacher
    return student


def job_rollback(*, job: DistillationJob, user: Any = None) -> str:
    """Undo the latest approval's alias change (the alias goes back to its previous target).
    Returns the alias's target now ('' when the undo removed it)."""
    return job_rollback_report(job=job, user=user).target


def job_rollback_report(*, job: DistillationJob, user: Any = None) -> Rollback:
    """job_rollback, with what could not be cleaned up: a vLLM student's adapter is unloaded best
    effort (a failure is logged and reported; the alias is restored all the same)."""
    student = job.students.order_by("-version").first()
    if student is None or not student.alias:
        raise ValidationError("This job has no approved student to roll back.")
    target = student.model
    current = alias_get(project=job.project, name=student.alias)
    if current is None or current.target != target:
        now = current.target if current else "nothing"
        raise ValidationError(f"Alias {student.alias!r} now points at {now}, not {student.name}: nothing to roll back.")
    from routing.learning import student_leave  # numpy/scipy: not at import time

    student_leave(student=student)  # routing policies stop choosing it too
    last = AliasChange.objects.filter(project=job.project, name=student.alias).first()
    if last is not None and (last.from_target, last.to_target) == (student.replaced_target, target):
        restored = alias_rollback(project=job.project, name=student.alias, changed_by=_who(user))
        now_target = restored.target if restored else ""
    elif not student.replaced_target:  # the alias came back to the student by later changes
        alias_delete(project=job.project, name=student.alias, changed_by=_who(user))
        now_target = ""
    else:
        now_target = alias_set(
            project=job.project, name=student.alias, target=student.replaced_target, changed_by=_who(user)
        ).target
    warnings = []
    if student.serving == Student.Serving.VLLM:
        warnings = vllm.adapter_unload(project=job.project, name=student.name)
    return Rollback(now_target, warnings)
