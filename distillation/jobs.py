"""The phases of a distillation job, each called by one Celery task (distillation/tasks.py):

prepare (default queue): sampling — N teacher answers per training prompt through the engine's own
  /v1 path (gateway.internal, traced as internal with the job id in the metadata), a few at a time,
  retried on transient errors; a person's edit of a row is one more candidate with the top reward —
  then judging — every candidate scored with datasets.judge's scorer for the job's judge (a check:
  1 or 0; an LLM judge: 1-10, garbage asked again, then the error is recorded and the job fails).
train (gpu queue): trainer.train on the judged candidates; each step's loss goes to the job row,
  a cancel request stops it at the next step.
evaluate (default queue): held-out prompts answered by the teacher, the trained student and the
  untrained base; agreement, judge score, win/tie/loss, latency and cost per 1,000 requests.

Every candidate is stored as soon as it exists: a resumed job never asks the teacher or the judge
again for what it already has. Any failure ends the job `failed` with the reason."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.db import IntegrityError, OperationalError
from django.utils import timezone

from datasets import judge as J
from datasets.models import DatasetRow, JudgeRun
from gateway.internal import InternalCallError, chat_sync, reply_text
from opentracy_site import heartbeat
from opentracy_site import progress as job_progress

from .models import Candidate, DistillationJob

log = logging.getLogger(__name__)
KIND = "distillation"  # the heartbeat kind of these jobs

JOB_METADATA_KEY = "opentracy_distillation_job"
SAMPLING_CONCURRENCY = 4
SAMPLING_ATTEMPTS = 3
SAMPLING_BACKOFF_S = 0.5  # doubled after each transient failure
TRANSIENT = {408, 409, 429, 500, 502, 503, 504}
TEACHER_TEMPERATURE = 1.0
# Share of the progress bar at the start of each phase.
PHASES = {"sampling": 0.0, "judging": 0.3, "training": 0.45, "evaluating": 0.9}
EVAL_ROWS_SHOWN = 50


class Cancelled(Exception):
    pass


class JobFailed(Exception):
    """A failure people can act on: the message is shown as is."""


# ---------------------------------------------------------------- job row helpers


def _set(job: DistillationJob, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(job, name, value)
    DistillationJob.objects.filter(pk=job.pk).update(**fields)
    job_progress.publish("distillation", job.pk, **fields)


def check_cancel(job: DistillationJob) -> None:
    if DistillationJob.objects.filter(pk=job.pk, cancel_requested=True).exists():
        raise Cancelled()


def _phase(job: DistillationJob, phase: str) -> None:
    check_cancel(job)
    _set(job, phase=phase, progress=PHASES[phase])


def _progress(job: DistillationJob, phase: str, fraction: float) -> None:
    phases = list(PHASES)
    nxt = phases.index(phase) + 1
    end = PHASES[phases[nxt]] if nxt < len(phases) else 1.0
    _set(job, progress=round(PHASES[phase] + (end - PHASES[phase]) * min(1.0, fraction), 4))


def run_phase(
    job_id: int, phase_fn: Callable[[DistillationJob], None], *, first: bool = False, last: bool = False
) -> str:
    """Run one phase with the status guard: the first phase claims a queued job (or picks up a
    running one, on redelivery); later phases run only while the job is running. Any exception
    ends the job failed (or cancelled) with its reason. Returns the job's status afterwards."""
    with heartbeat.beating(KIND, job_id):  # the sweep fails the job if this process dies
        status = _run_phase(job_id, phase_fn, first=first, last=last)
    if status != DistillationJob.Status.RUNNING:
        heartbeat.forget(KIND, job_id)
    return status


def _run_phase(job_id: int, phase_fn: Callable[[DistillationJob], None], *, first: bool, last: bool) -> str:
    if first:
        claimed = DistillationJob.objects.filter(pk=job_id, status=DistillationJob.Status.QUEUED).update(
            status=DistillationJob.Status.RUNNING, started_at=timezone.now(), message=""
        )
        if not claimed and not DistillationJob.objects.filter(pk=job_id, status="running").exists():
            return "skipped"
        job_progress.publish("distillation", job_id, status="running")
    job = DistillationJob.objects.select_related("project", "dataset_version").filter(pk=job_id).first()
    if job is None or job.status != DistillationJob.Status.RUNNING:
        return "skipped"
    try:
        phase_fn(job)
    except Cancelled:
        _set(
            job,
            status=DistillationJob.Status.CANCELLED,
            finished_at=timezone.now(),
            message=f"Cancelled during {job.phase or 'start-up'}.",
        )
    except OperationalError:
        raise  # the task retries with backoff; the phase resumes where it stopped
    except JobFailed as exc:
        _set(job, status=DistillationJob.Status.FAILED, finished_at=timezone.now(), message=str(exc)[:4000])
    except Exception as exc:  # never a job stuck running
        log.exception("distillation job %s failed", job.pk)
        reason = f"Failed during {job.phase or 'start-up'}: {type(exc).__name__}: {exc}"
        _set(job, status=DistillationJob.Status.FAILED, finished_at=timezone.now(), message=reason[:4000])
    else:
        if last:
            _set(job, status=DistillationJob.Status.DONE, progress=1.0, finished_at=timezone.now(), phase="done")
    return str(job.status)


def job_fail(*, job_id: int, message: str) -> None:
    if (
        DistillationJob.objects.filter(pk=job_id)
        .exclude(status__in=DistillationJob.FINISHED)
        .update(status=DistillationJob.Status.FAILED, message=message[:4000], finished_at=timezone.now())
    ):
        job_progress.publish("distillation", job_id, status="failed", message=message)


# ---------------------------------------------------------------- sampling


def _metadata(job: DistillationJob) -> dict[str, str]:
    return {JOB_METADATA_KEY: str(job.pk)}


def teacher_call(
    job: DistillationJob,
    messages: list[Any],
    *,
    purpose: str = "distillation-teacher",
    temperature: float = TEACHER_TEMPERATURE,
) -> tuple[str, dict[str, Any]]:
    """The teacher's answer and the response body; transient failures retried with backoff.
    Raises JobFailed naming the status and the engine's message."""
    body = {"model": job.teacher, "messages": messages, "temperature": temperature, "metadata": _metadata(job)}
    delay = SAMPLING_BACKOFF_S
    first = ""
    for attempt in range(1, SAMPLING_ATTEMPTS + 1):
        try:
            data = chat_sync(project=job.project, body=body, purpose=purpose)
            return reply_text(data), data
        except InternalCallError as exc:
            problem = f"{exc.status}: {exc.message}"
            first = first or problem
            if exc.status not in TRANSIENT or attempt == SAMPLING_ATTEMPTS:
                last = f"; last: {problem}" if problem != first else ""
                raise JobFailed(
                    f"The teacher {job.teacher!r} failed ({first}{last}) after {attempt} attempt(s)."
                ) from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _train_rows(job: DistillationJob) -> list[DatasetRow]:
    ids = job.split.get("train") or []
    return list(DatasetRow.objects.filter(version=job.dataset_version, pk__in=ids).order_by("pk"))


def sample(job: DistillationJob) -> int:
    """Ask the teacher for every missing candidate; returns how many calls were made."""
    _phase(job, "sampling")
    rows = _train_rows(job)
    have = set(Candidate.objects.filter(job=job).values_list("row_id", "index"))
    for row in rows:  # a person's correction: the top-reward candidate, never asked for
        if row.edited_response and (row.pk, Candidate.HUMAN_INDEX) not in have:
            Candidate.objects.create(job=job, row=row, index=Candidate.HUMAN_INDEX, text=row.edited_response)
    todo = [(row, i) for row in rows for i in range(job.n) if (row.pk, i) not in have]
    total = len(rows) * job.n
    done = total - len(todo)
    if not todo:
        return 0

    def one(row: DatasetRow) -> tuple[str, str]:
        text, data = teacher_call(job, row.messages)
        return text, str(data.get("_trace_id") or "")

    calls = 0
    pending: dict[Future[tuple[str, str]], tuple[DatasetRow, int]] = {}
    queue = list(todo)
    with ThreadPoolExecutor(max_workers=SAMPLING_CONCURRENCY, thread_name_prefix=f"distill-{job.pk}") as pool:
        try:
            while queue or pending:
                while queue and len(pending) < SAMPLING_CONCURRENCY:
                    row, index = queue.pop(0)
                    pending[pool.submit(one, row)] = (row, index)
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    row, index = pending.pop(future)
                    text, trace_id = future.result()  # JobFailed propagates: the job fails
                    calls += 1
                    with contextlib.suppress(IntegrityError):  # another delivery stored it first
                        Candidate.objects.create(job=job, row=row, index=index, text=text, teacher_trace_id=trace_id)
                    done += 1
                _progress(job, "sampling", done / total)
                check_cancel(job)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return calls


# ---------------------------------------------------------------- judging


def judge_run_for(job: DistillationJob) -> JudgeRun:
    """An unsaved JudgeRun carrying the job's judge, so datasets.judge's scorers apply unchanged."""
    run = JudgeRun(
        version=job.dataset_version,
        kind=job.judge_kind,
        judge=job.judge_alias if job.judge_kind in J.LLM_KINDS else job.judge_kind,
        options=job.judge_options,
    )
    run.trace_metadata = _metadata(job)  # type: ignore[attr-defined]  # read by datasets.judge._ask
    return run


def score_text(run: JudgeRun, row: DatasetRow, text: str) -> J.Outcome:
    """Score `text` as an answer to `row`'s prompt: 1/0 for checks, 1-10 for the LLM judge."""
    # Rows curated from traffic carry no reference: there the curated answer (kept or edited by a
    # person) is what `exact` compares with, otherwise every candidate would be unjudgeable.
    reference = row.reference or (row.target if run.kind == "exact" else "")
    probe = DatasetRow(pk=row.pk, version_id=row.version_id, messages=row.messages, response=text, reference=reference)
    outcome = J.judge_row(run, probe)
    if not outcome.error and outcome.score is None:
        outcome.score = 1.0 if outcome.passed else 0.0
    return outcome


def top_score(job: DistillationJob) -> float:
    return 10.0 if job.judge_kind in J.LLM_KINDS else 1.0


def judge(job: DistillationJob) -> int:
    """Score every unjudged candidate; fails the job when some cannot be judged."""
    _phase(job, "judging")
    run = judge_run_for(job)
    Candidate.objects.filter(job=job, index=Candidate.HUMAN_INDEX, judged=False).update(
        score=top_score(job), judged=True, error=""
    )
    todo = list(Candidate.objects.filter(job=job, judged=False).select_related("row").order_by("row_id", "index"))
    errors: list[str] = []
    for i, cand in enumerate(todo, 1):
        outcome = score_text(run, cand.row, cand.text)
        if outcome.error:
            errors.append(f"row {cand.row_id} candidate {cand.index}: {outcome.error}")
            Candidate.objects.filter(pk=cand.pk).update(error=outcome.error[:2000])
        else:
            Candidate.objects.filter(pk=cand.pk).update(score=outcome.score, judged=True, error="")
        _progress(job, "judging", i / len(todo))
        check_cancel(job)
    if errors:
        raise JobFailed(
            f"{len(errors)} of {len(todo)} candidates could not be judged (start the job again to retry them): "
            + errors[0]
        )
    return len(todo)


def prepare(job: DistillationJob) -> None:
    sample(job)
    judge(job)


# ---------------------------------------------------------------- training


def build_examples(job: DistillationJob) -> list[Any]:
    """One TrainExample per training row: its judged candidates and scores; the best is a
    person's edit when there is one, else the highest-scored sample (the first on a tie)."""
    from .trainer import TrainExample

    by_row: dict[int, list[Candidate]] = {}
    for cand in Candidate.objects.filter(job=job, judged=True).select_related("row").order_by("row_id", "index"):
        by_row.setdefault(cand.row_id, []).append(cand)
    examples = []
    for cands in by_row.values():
        human = [c for c in cands if c.human]
        best = human[0] if human else max(cands, key=lambda c: (c.score or 0.0, -c.index))
        examples.append(
            TrainExample(
                messages=cands[0].row.messages,
                candidates=[c.text for c in cands],
                scores=[float(c.score or 0.0) for c in cands],
                best=best.text,
            )
        )
    return examples


def adapter_dir(job: DistillationJob) -> Path:
    """The job's training folder (checkpoint, final adapter, merged export), under
    OPENTRACY_ADAPTER_DIR: the volume the web tier and vLLM read adapters from."""
    return Path(django_settings.OPENTRACY_ADAPTER_DIR) / f"job-{job.pk}"


def train(job: DistillationJob) -> None:
    from . import students, trainer

    _phase(job, "training")
    examples = build_examples(job)
    if not examples:
        raise JobFailed("No judged candidates to train on.")
    base = students.student_get(job.student)
    if base is None:
        raise JobFailed(f"Unknown student {job.student!r}.")
    try:
        source = students.student_source(base)
    except students.StudentUnavailable as exc:
        raise JobFailed(str(exc)) from None
    settings = trainer.TrainSettings(**{**job.settings, "target_modules": tuple(job.settings["target_modules"])})
    run = judge_run_for(job)
    rows = {repr(r.messages): r for r in _train_rows(job)}

    def scorer(messages: list[dict[str, Any]], text: str) -> float:
        row = rows.get(repr(messages))
        if row is None:
            return 0.0
        outcome = score_text(run, row, text)
        return float(outcome.score or 0.0) if not outcome.error else 0.0

    history: list[dict[str, float]] = []

    def on_step(entry: dict[str, float]) -> None:
        history.append({k: float(v) for k, v in entry.items()})
        step = entry.get("step", len(history))
        _set(job, metrics={"history": history, "steps": settings.steps})
        _progress(job, "training", float(step) / settings.steps)

    def should_stop() -> bool:
        return DistillationJob.objects.filter(pk=job.pk, cancel_requested=True).exists()

    out = adapter_dir(job)
    try:
        result = trainer.train(
            base=source,
            examples=examples,
            out_dir=out,
            settings=settings,
            scorer=scorer,
            on_step=on_step,
            should_stop=should_stop,
        )
    except trainer.Stopped:
        raise Cancelled() from None
    except NotImplementedError:
        raise JobFailed("The trainer is not available in this build (distillation/trainer.py).") from None
    except trainer.StudentUnavailable as exc:
        raise JobFailed(str(exc)) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise JobFailed(
                f"Out of memory while training {job.student}: {exc}. Lower batch_size or use a smaller student."
            ) from None
        raise
    metrics = {
        "history": result.history or history,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "device": result.device,
    }
    _set(job, metrics=metrics, adapter_path=str(result.adapter_dir))


# ---------------------------------------------------------------- evaluation


def _norm(text: str) -> str:
    return " ".join(text.split()).strip().casefold().rstrip(".")


def evaluate(job: DistillationJob) -> None:
    """Held-out prompts: teacher vs trained student vs untrained base."""
    from traces.cost import compute_cost

    from . import students, trainer

    _phase(job, "evaluating")
    held = list(DatasetRow.objects.filter(version=job.dataset_version, pk__in=job.split.get("held_out") or []))
    base = students.student_get(job.student)
    source = students.student_source(base) if base else job.student
    adapter = Path(job.adapter_path) if job.adapter_path else None
    max_new = int(job.settings.get("max_new_tokens", 64))
    run = judge_run_for(job)
    who = ("teacher", "student", "base")
    scores: dict[str, list[float]] = {w: [] for w in who}
    latency: dict[str, list[float]] = {w: [] for w in who}
    agree = {"student": 0, "base": 0}
    wtl = {"win": 0, "tie": 0, "loss": 0}
    teacher_usd: list[float | None] = []
    shown: list[dict[str, Any]] = []
    answers: dict[int, dict[str, str]] = {row.pk: {} for row in held}
    total = max(1, len(held) * 3)
    done = 0
    for row in held:
        started = time.perf_counter()
        answers[row.pk]["teacher"], data = teacher_call(job, row.messages, purpose="distillation-eval", temperature=0.0)
        latency["teacher"].append((time.perf_counter() - started) * 1000)
        teacher_usd.append(_call_cost(job, data, compute_cost))
        done += 1
        _progress(job, "evaluating", done / total)
        check_cancel(job)
    # One model at a time: the trainer keeps the last one it loaded.
    for name, adir in (("student", adapter), ("base", None)):
        for row in held:
            started = time.perf_counter()
            answers[row.pk][name] = trainer.generate(
                base=source, adapter_dir=adir, messages=row.messages, max_new_tokens=max_new
            )
            latency[name].append((time.perf_counter() - started) * 1000)
            done += 1
            _progress(job, "evaluating", done / total)
            check_cancel(job)
    for row in held:
        got = answers[row.pk]
        row_scores: dict[str, float | None] = {}
        for name in who:
            outcome = score_text(run, row, got[name])
            row_scores[name] = None if outcome.error else float(outcome.score or 0.0)
            if row_scores[name] is not None:
                scores[name].append(row_scores[name])  # type: ignore[arg-type]
        for name in ("student", "base"):
            agree[name] += _norm(got[name]) == _norm(got["teacher"])
        s, t = row_scores["student"], row_scores["teacher"]
        if s is not None and t is not None:
            wtl["win" if s > t else "tie" if s == t else "loss"] += 1
        if len(shown) < EVAL_ROWS_SHOWN:
            shown.append({"row": row.pk, "answers": got, "scores": row_scores})
        check_cancel(job)
    count = len(held)

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 3) if values else None

    known_usd = [u for u in teacher_usd if u is not None]
    per_1k_teacher = round(1000 * sum(known_usd) / len(known_usd), 6) if known_usd and len(known_usd) == count else None
    models = {
        w: {
            "mean_score": mean(scores[w]),
            "judged": len(scores[w]),
            "latency_ms": mean(latency[w]),
            "cost_per_1k_usd": per_1k_teacher if w == "teacher" else 0.0,
        }
        for w in who
    }
    _set(
        job,
        evaluation={
            "held_out": count,
            "judge": {"kind": job.judge_kind, "alias": job.judge_alias},
            "models": models,
            "agreement": {k: round(v / count, 3) if count else None for k, v in agree.items()},
            "student_vs_teacher": wtl,
            "notes": "agreement is exact match after normalising spaces and case (meaningful for short labels); "
            "the student runs locally (no per-token bill; its cost is the machine's).",
            "rows": shown,
        },
    )


def _call_cost(job: DistillationJob, data: dict[str, Any], compute_cost: Any) -> float | None:
    from gateway.resolve import parse_target
    from gateway.selectors import alias_get

    usage = data.get("usage") or {}
    alias = alias_get(project=job.project, name=job.teacher)
    target = parse_target(alias.target if alias else job.teacher)
    if target is None:
        return None
    return compute_cost(
        project_id=job.project_id,
        provider=target.provider,
        model=target.model,
        prompt=int(usage.get("prompt_tokens") or 0),
        completion=int(usage.get("completion_tokens") or 0),
        cached=0,
    )[2]
