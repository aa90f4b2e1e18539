"""Approving a trained student and rolling the approval back (re-exported by services). Putting a
student in service (`put_in_service`) is shared with canaries (canary.py), which serve it on a share
of an alias's traffic before it is approved.

Approval registers a Student named `<base>-v<n>` (n from StudentCounter: never reused, even after
a failed approval or a deleted project) and re-points an alias at it through the alias history.
Serving is `local` (in-process, distillation/serving.py) or `vllm` (the adapter loaded into the
project's vLLM server first; the alias only moves once the load succeeded)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

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


def who(user: Any) -> str:
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


def _check_approvable(job: DistillationJob, alias: str, serve: str) -> None:
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


def put_in_service(job: DistillationJob, alias: str, serve: str, then: Callable[[Student], None], user: Any) -> Student:
    """Name the student (`<base>-v<n>`), load it into vLLM when it is served there, then register it
    and run `then` (the alias change) in one transaction. A failed load raises ServingFailed and a
    failed `then` unloads the adapter again: nothing is left half-done."""
    _check_approvable(job, alias, serve)
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
            student = Student.objects.create(
                project=job.project,
                job=job,
                base=job.student,
                adapter_path=job.adapter_path,
                version=version,
                name=name,
                serving=serve,
                created_by=acting_user(user),
            )
            then(student)
    except Exception:
        if serve == Student.Serving.VLLM:
            vllm.adapter_unload(project=job.project, name=name)
        raise
    return student


def mark_approved(student: Student, alias: str, replaced_target: str) -> None:
    student.alias, student.replaced_target, student.approved_at = alias, replaced_target, timezone.now()
    student.save(update_fields=["alias", "replaced_target", "approved_at"])


def job_approve(*, job: DistillationJob, alias: str, user: Any = None, serve: str | None = None) -> Student:
    """Register the job's adapter as a Student and re-point `alias` at `<serve>/<name>`; the change
    is recorded in the alias history. serve=None takes OPENTRACY_STUDENT_SERVING. With "vllm" the
    adapter is loaded into the project's vLLM server(s) first: ServingFailed when that fails, with
    the alias and the students untouched. A canary running on the alias ends (as stopped)."""
    alias = (alias or "").strip()

    def repoint(student: Student) -> None:
        current = alias_get(project=job.project, name=alias)
        mark_approved(student, alias, current.target if current else "")
        alias_set(project=job.project, name=alias, target=student.model, changed_by=who(user))

    student = put_in_service(job, alias, serve or settings.OPENTRACY_STUDENT_SERVING, repoint, user)
    from .canary import end_running  # canary imports this module

    end_running(project=job.project, alias=alias, user=user)
    from routing.learning import student_approved  # numpy/scipy: not at import time

    student_approved(student=student)  # joins the routing policies that route to its teacher
    return student


def latest_approved(job: DistillationJob) -> Student | None:
    """The job's latest student put on an alias (a stopped canary's never was)."""
    return job.students.filter(approved_at__isnull=False).exclude(alias="").order_by("-version").first()


def job_rollback(*, job: DistillationJob, user: Any = None) -> str:
    """Undo the latest approval's alias change (the alias goes back to its previous target).
    Returns the alias's target now ('' when the undo removed it)."""
    return job_rollback_report(job=job, user=user).target


def job_rollback_report(*, job: DistillationJob, user: Any = None) -> Rollback:
    """job_rollback, with what could not be cleaned up: a vLLM student's adapter is unloaded best
    effort (a failure is logged and reported; the alias is restored all the same)."""
    student = latest_approved(job)
    if student is None:
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
        restored = alias_rollback(project=job.project, name=student.alias, changed_by=who(user))
        now_target = restored.target if restored else ""
    elif not student.replaced_target:  # the alias came back to the student by later changes
        alias_delete(project=job.project, name=student.alias, changed_by=who(user))
        now_target = ""
    else:
        now_target = alias_set(
            project=job.project, name=student.alias, target=student.replaced_target, changed_by=who(user)
        ).target
    warnings = []
    if student.serving == Student.Serving.VLLM:
        warnings = vllm.adapter_unload(project=job.project, name=student.name)
    return Rollback(now_target, warnings)
