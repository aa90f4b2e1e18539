"""Canaries: a trained student answers a share of an alias's live traffic beside the alias's own
target (the incumbent), both sides are judged on what they answered, and people then promote it
(the alias is re-pointed at it, as an approval) or stop it (the alias is as before).

The split lives on the alias (gateway: `canary_target`, `canary_percent`); the incumbent stays the
canary's fallback, so a failing student costs a retry, not an error. Judging uses the job's judge:
each side's own answers for judges that read one answer (LLM pointwise or pairwise, JSON, schema,
regex); for `exact`, which needs a reference, the student's answers are compared with the
incumbent's answer to the same prompt, asked again off the request path (the incumbent side is the
reference there, so only the student side has verdicts)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets.curation import acting_user, answer_text, trace_messages
from datasets.models import DatasetRow
from gateway.internal import InternalCallError, chat_sync, reply_text
from gateway.selectors import alias_get
from gateway.services import alias_canary_clear, alias_canary_set, alias_for_canary, alias_set

from . import selectors, vllm
from .approval import mark_approved, put_in_service, who
from .jobs import judge_run_for, score_text
from .models import Canary, CanaryVerdict, DistillationJob, Student

CANARY_METADATA_KEY = "opentracy_canary"  # on the engine's own calls for a canary (judge, reference)
JUDGE_PER_SIDE = 20  # answers judged per side and pass: a first reading, cheap even with an LLM judge
MAX_PERCENT = 99  # 100% is an approval


def _percent(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PERCENT:
        raise ValidationError({"percent": f"Send from 1 to {MAX_PERCENT} percent of the requests to the student."})
    return value


def canary_start(
    *, job: DistillationJob, alias: str, percent: Any, user: Any = None, serve: str | None = None
) -> Canary:
    """Register the job's student (as an approval does, vLLM load included) and send `percent` of
    the alias's requests to it. The alias must exist and name a model (not a routing policy)."""
    alias = (alias or "").strip()
    percent = _percent(percent)
    try:  # checked before a student number is taken or vLLM loads anything
        current = alias_for_canary(project=job.project, name=alias)
    except ValidationError as exc:
        raise ValidationError({"alias": exc.messages}) from None
    if Canary.objects.filter(project=job.project, alias=alias, status=Canary.Status.RUNNING).exists():
        raise ValidationError({"alias": f"A canary already runs on {alias!r}: promote or stop it first."})
    started: list[Canary] = []

    def share(student: Student) -> None:
        alias_canary_set(project=job.project, name=alias, target=student.model, percent=percent)
        started.append(
            Canary.objects.create(
                project=job.project,
                job=job,
                student=student,
                alias=alias,
                incumbent=current.target,
                percent=percent,
                started_by=acting_user(user),
            )
        )

    try:
        put_in_service(job, alias, serve or settings.OPENTRACY_STUDENT_SERVING, share, user)
    except IntegrityError:  # another canary started on the alias meanwhile (one_running_canary_per_alias)
        raise ValidationError({"alias": f"A canary already runs on {alias!r}: promote or stop it first."}) from None
    return started[0]


def _lock_running(canary: Canary) -> Canary:
    locked = Canary.objects.select_for_update().select_related("student", "project").get(pk=canary.pk)
    if locked.status != Canary.Status.RUNNING:
        raise ValidationError(f"This canary was {locked.status} already.")
    return locked


def _end(canary: Canary, status: str, user: Any) -> None:
    alias_canary_clear(project=canary.project, name=canary.alias)
    canary.status, canary.ended_at, canary.ended_by = status, timezone.now(), who(user)
    canary.save(update_fields=["status", "ended_at", "ended_by"])


def canary_update(*, canary: Canary, percent: Any) -> Canary:
    """Change the student's share while the canary runs."""
    percent = _percent(percent)
    with transaction.atomic():
        canary = _lock_running(canary)
        alias_canary_set(project=canary.project, name=canary.alias, target=canary.student.model, percent=percent)
        canary.percent = percent
        canary.save(update_fields=["percent"])
    return canary


def canary_promote(*, canary: Canary, user: Any = None) -> Student:
    """The full swap: the alias is re-pointed at the student (in its history, so roll back works
    as after an approval) and the canary ends."""
    with transaction.atomic():
        canary = _lock_running(canary)
        current = alias_get(project=canary.project, name=canary.alias)
        student = canary.student
        mark_approved(student, canary.alias, current.target if current else canary.incumbent)
        alias_set(project=canary.project, name=canary.alias, target=student.model, changed_by=who(user))
        _end(canary, Canary.Status.PROMOTED, user)
    from routing.learning import student_approved  # numpy/scipy: not at import time

    student_approved(student=student)
    return student


def canary_stop(*, canary: Canary, user: Any = None) -> list[str]:
    """The alias goes back to its target alone; a vLLM student's adapter is unloaded (best effort:
    what could not be unloaded is returned)."""
    with transaction.atomic():
        canary = _lock_running(canary)
        _end(canary, Canary.Status.STOPPED, user)
    if canary.student.serving == Student.Serving.VLLM:
        return vllm.adapter_unload(project=canary.project, name=canary.student.name)
    return []


def end_running(*, project: Any, alias: str, user: Any = None) -> None:
    """Stop the canary running on `alias`, if any (an approval onto the alias supersedes it)."""
    for canary in Canary.objects.filter(project=project, alias=alias, status=Canary.Status.RUNNING):
        canary_stop(canary=canary, user=user)


# ---------------------------------------------------------------- judging live answers


def _reference(canary: Canary, messages: list[Any]) -> str:
    """The incumbent's answer to the same prompt, asked directly (not through the alias, which
    would send a share of these calls to the student)."""
    body = {"model": canary.incumbent, "messages": messages, "metadata": {CANARY_METADATA_KEY: str(canary.pk)}}
    return reply_text(chat_sync(project=canary.project, body=body, purpose="canary-reference"))


def _verdict(canary: Canary, run: Any, trace: dict[str, Any], side: str) -> CanaryVerdict:
    messages = trace_messages(trace["request_messages"])
    answer = answer_text(trace["response_message"])
    fields: dict[str, Any] = {"side": side}
    reference = ""
    if run.kind == "exact":
        try:
            reference = _reference(canary, messages)
        except InternalCallError as exc:
            fields["error"] = f"the incumbent {canary.incumbent} could not answer for reference: {exc.message}"
        else:
            if not reference.strip():
                fields["error"] = f"the incumbent {canary.incumbent} gave an empty answer to compare with"
    if "error" not in fields:
        outcome = score_text(run, DatasetRow(messages=messages, response=answer, reference=reference), answer)
        fields.update(score=outcome.score, passed=outcome.passed, reason=outcome.reason, error=outcome.error)
    found, _created = CanaryVerdict.objects.get_or_create(canary=canary, trace_id=trace["trace_id"], defaults=fields)
    return found


def canary_judge(*, canary: Canary, per_side: int = JUDGE_PER_SIDE) -> dict[str, int]:
    """One judging pass over answers not judged yet, newest first: up to `per_side` per side.
    Returns how many were judged per side. Answers that cannot be judged keep a verdict with the
    reason (and are not asked again); the pass's problems are kept on the canary."""
    canary = Canary.objects.select_related("job", "student", "project").get(pk=canary.pk)
    run = judge_run_for(canary.job)
    run.trace_metadata = {CANARY_METADATA_KEY: str(canary.pk)}  # type: ignore[attr-defined]
    sides = [Canary.Side.STUDENT] if run.kind == "exact" else list(Canary.Side)
    done: dict[str, int] = {}
    problems: list[str] = []
    for side in sides:
        traces = selectors.canary_unjudged(canary, side, per_side)
        verdicts = [_verdict(canary, run, trace, side) for trace in traces]
        done[side] = len(verdicts)
        if errors := [v.error for v in verdicts if v.error]:
            problems.append(f"{len(errors)} {side} answer(s) could not be judged: {errors[0]}")
    canary.judged_at, canary.judge_message = timezone.now(), "; ".join(problems)
    canary.save(update_fields=["judged_at", "judge_message"])
    return done


def judge_running() -> int:
    """A judging pass over every running canary (the periodic task); returns how many."""
    running = list(Canary.objects.filter(status=Canary.Status.RUNNING))
    for canary in running:
        canary_judge(canary=canary)
    return len(running)
