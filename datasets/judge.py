"""Judging a dataset version's rows: an LLM judge through an alias (pointwise with a rubric, or
pairwise against another model's answer to the same prompt), or a programmatic check (JSON
validity, a JSON schema, a regex, exact match against the row's reference).

LLM calls go through the engine's own /v1 path (gateway.internal), so the alias, retries, cost and
trace apply. A judge answer that cannot be parsed is asked for again (ATTEMPTS in all); after that
the row's verdict is stored with `error` set (unjudged), and the run goes on. Verdicts are keyed by
row, judge and judge_version (a hash of the kind, alias target, rubric and options): a run resumed
or re-run with the same settings skips rows already judged."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import transaction
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.internal import InternalCallError, chat_sync, reply_text
from gateway.selectors import alias_get
from opentracy_site import progress as job_progress

from .curation import CurationError, acting_user
from .models import DatasetRow, DatasetVersion, JudgeRun, Verdict

LLM_KINDS = ("pointwise", "pairwise")
CHECK_KINDS = ("json", "json_schema", "regex", "exact")
KINDS = LLM_KINDS + CHECK_KINDS
DEFAULT_ALIAS = "judge"
ATTEMPTS = 2
DEFAULT_THRESHOLD = 7.0
CRITERIA = ("correctness", "helpfulness", "format")
PROGRESS_EVERY = 10  # rows between progress writes (and cancel checks)
MAX_PROMPT_CHARS = 24_000  # of the conversation shown to the judge

DEFAULT_RUBRIC = (
    "Correctness: is the answer factually and logically right for the request?\n"
    "Helpfulness: does it do what the user asked, completely and without padding?\n"
    "Format: is it well formed for the request (requested structure, language, length)?"
)
POINTWISE_SYSTEM = """You are a strict, fair evaluator of an AI assistant's answer.
Score the answer from 1 (worst) to 10 (best) on each criterion of this rubric:
{rubric}
Reply with only a JSON object, no other text:
{{"correctness": <1-10>, "helpfulness": <1-10>, "format": <1-10>, "reason": "<one or two sentences>"}}"""
PAIRWISE_SYSTEM = """You are a strict, fair evaluator comparing two answers to the same request.
Judge which answer is better by this rubric:
{rubric}
Ignore the order in which the answers are shown and their length as such.
Reply with only a JSON object, no other text:
{{"winner": "A" | "B" | "tie", "reason": "<one or two sentences>"}}"""


class JudgeAnswerError(ValueError):
    """The judge's reply could not be read as a verdict."""


# ---------------------------------------------------------------- starting a run


def _option_errors(kind: str, options: dict[str, Any]) -> str:
    if kind == "pairwise" and not str(options.get("model") or "").strip():
        return "Pairwise judging needs options.model: the model or alias to compare against."
    if kind == "json_schema":
        schema = options.get("schema")
        if not isinstance(schema, dict):
            return "options.schema must be a JSON schema object."
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            return f"options.schema is not a valid JSON schema: {exc.message}"
    if kind == "regex":
        try:
            re.compile(str(options.get("pattern") or ""))
        except re.error as exc:
            return f"options.pattern is not a valid regular expression: {exc}"
        if not options.get("pattern"):
            return "options.pattern is required for a regex check."
    if "threshold" in options:
        try:
            float(options["threshold"])
        except (TypeError, ValueError):
            return "options.threshold must be a number."
    return ""


def judge_version_of(*, version: DatasetVersion, kind: str, judge: str, options: dict[str, Any]) -> str:
    """Same settings, same hash: the alias's current target is part of it, so re-pointing the
    judge alias at another model gives new verdicts rather than mixing the two."""
    target = ""
    if kind in LLM_KINDS:
        project = version.dataset.project
        alias = alias_get(project=project, name=judge)
        target = alias.target if alias else judge
        if kind == "pairwise":
            other = alias_get(project=project, name=str(options.get("model")))
            target += "|" + (other.target if other else str(options.get("model")))
    payload = {"kind": kind, "judge": judge, "target": target, "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def judge_run_create(
    *, version: DatasetVersion, kind: str, user: Any = None, alias: str = "", options: dict[str, Any] | None = None
) -> JudgeRun:
    """A queued judge run, handed to the Celery task once the transaction commits."""
    options = dict(options or {})
    if kind not in KINDS:
        raise CurationError(f"kind: use one of {', '.join(KINDS)}.")
    problem = _option_errors(kind, options)
    if problem:
        raise CurationError(problem)
    judge = (alias or DEFAULT_ALIAS) if kind in LLM_KINDS else kind
    run = JudgeRun.objects.create(
        version=version,
        kind=kind,
        judge=judge,
        judge_version=judge_version_of(version=version, kind=kind, judge=judge, options=options),
        options=options,
        created_by=acting_user(user),
    )
    transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(run_id: int) -> None:
    from .tasks import judge_run  # the Celery task lives with the app's other tasks

    judge_run.delay(run_id)


def judge_run_cancel(*, run: JudgeRun) -> JudgeRun:
    """A queued run is cancelled at once; a running one stops at its next progress check."""
    job_progress.cancel(run, "judge", at_once=[JudgeRun.Status.QUEUED])
    return run


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    score: float | None = None
    scores: dict[str, Any] | None = None
    passed: bool | None = None
    reason: str = ""
    error: str = ""


def _extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in a reply (code fences and chatter around it are tolerated)."""
    cleaned = re.sub(r"```(?:json)?", "", text)
    start = cleaned.find("{")
    while start != -1:
        depth, in_str, escape = 0, False, False
        for end in range(start, len(cleaned)):
            ch = cleaned[end]
            if in_str:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = orjson.loads(cleaned[start : end + 1])
                    except orjson.JSONDecodeError:
                        break
                    if isinstance(value, dict):
                        return value
                    break
        start = cleaned.find("{", start + 1)
    raise JudgeAnswerError(f"no JSON object in the judge's reply: {text[:200]!r}")


def parse_pointwise(text: str) -> dict[str, Any]:
    data = _extract_json(text)
    scores: dict[str, Any] = {}
    for name in CRITERIA:
        value = data.get(name)
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise JudgeAnswerError(f"'{name}' is missing or not a number: {value!r}") from None
        if not 1 <= number <= 10:
            raise JudgeAnswerError(f"'{name}' is {number}, outside 1-10")
        scores[name] = number
    scores["reason"] = str(data.get("reason") or "")[:2000]
    return scores


def parse_pairwise(text: str) -> dict[str, str]:
    data = _extract_json(text)
    winner = str(data.get("winner") or "").strip().strip('"').upper()
    if winner not in ("A", "B", "TIE"):
        raise JudgeAnswerError(f"'winner' must be A, B or tie, not {data.get('winner')!r}")
    return {"winner": winner.lower() if winner == "TIE" else winner, "reason": str(data.get("reason") or "")[:2000]}


def _conversation(messages: list[Any]) -> str:
    parts = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"[{m.get('role', 'user')}]\n{content or ''}")
    text = "\n\n".join(parts)
    return text if len(text) <= MAX_PROMPT_CHARS else "…" + text[-MAX_PROMPT_CHARS:]


def _ask(run: JudgeRun, system: str, user: str, parse: Callable[[str], Any]) -> Any:
    """Ask the judge alias, up to ATTEMPTS times while the answer is garbage or the call fails."""
    project = run.version.dataset.project
    body = {
        "model": run.judge,
        "temperature": float(run.options.get("temperature", 0)),
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }
    if metadata := getattr(run, "trace_metadata", None):  # set by callers such as distillation jobs
        body["metadata"] = metadata
    problem = ""
    for _ in range(ATTEMPTS):
        try:
            return parse(reply_text(chat_sync(project=project, body=body, purpose="judge")))
        except JudgeAnswerError as exc:
            problem = f"unreadable judge answer: {exc}"
        except InternalCallError as exc:
            problem = f"judge call failed: {exc.message}"
    raise JudgeAnswerError(f"{problem} (after {ATTEMPTS} attempts)")


def _threshold(run: JudgeRun) -> float:
    return float(run.options.get("threshold", DEFAULT_THRESHOLD))


def judge_pointwise(run: JudgeRun, row: DatasetRow) -> Outcome:
    rubric = str(run.options.get("rubric") or DEFAULT_RUBRIC)
    user = f"Request:\n{_conversation(row.messages)}\n\nAnswer to evaluate:\n{row.target}"
    try:
        scores = _ask(run, POINTWISE_SYSTEM.format(rubric=rubric), user, parse_pointwise)
    except JudgeAnswerError as exc:
        return Outcome(error=str(exc))
    reason = scores.pop("reason")
    score = round(sum(scores.values()) / len(CRITERIA), 2)
    return Outcome(score=score, scores=scores, passed=score >= _threshold(run), reason=reason)


def judge_pairwise(run: JudgeRun, row: DatasetRow) -> Outcome:
    """The row's target against `options.model`'s answer to the same prompt. Which one is shown as
    A is drawn per row (seeded by the judge version and row, so a re-run draws the same) and
    recorded; the row passes unless the other answer wins."""
    other_model = str(run.options["model"])
    project = run.version.dataset.project
    try:
        other = reply_text(
            chat_sync(project=project, body={"model": other_model, "messages": row.messages}, purpose="judge-pairwise")
        )
    except InternalCallError as exc:
        return Outcome(error=f"the other model's call failed: {exc.message}")
    row_first = random.Random(f"{run.judge_version}:{row.pk}").random() < 0.5  # not for security: a reproducible draw
    a, b = (row.target, other) if row_first else (other, row.target)
    rubric = str(run.options.get("rubric") or DEFAULT_RUBRIC)
    user = f"Request:\n{_conversation(row.messages)}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"
    scores: dict[str, Any] = {"other_model": other_model, "other_answer": other, "order": "AB" if row_first else "BA"}
    try:
        answer = _ask(run, PAIRWISE_SYSTEM.format(rubric=rubric), user, parse_pairwise)
    except JudgeAnswerError as exc:
        return Outcome(scores=scores, error=str(exc))
    winner = answer["winner"]
    scores["winner_position"] = winner
    scores["winner"] = "tie" if winner == "tie" else "row" if (winner == "A") == row_first else "other"
    score = {"row": 10.0, "tie": 5.0, "other": 0.0}[scores["winner"]]
    return Outcome(score=score, scores=scores, passed=scores["winner"] != "other", reason=answer["reason"])


def check(kind: str, options: dict[str, Any], row: DatasetRow) -> Outcome:
    """A programmatic check of the row's target."""
    text = row.target
    if kind == "json":
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return Outcome(passed=False, reason=f"not valid JSON: {exc}")
        return Outcome(passed=True, reason="valid JSON")
    if kind == "json_schema":
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return Outcome(passed=False, reason=f"not valid JSON: {exc}")
        error = next(iter(Draft202012Validator(options["schema"]).iter_errors(value)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "(root)"
            return Outcome(passed=False, reason=f"schema mismatch at {where}: {error.message}")
        return Outcome(passed=True, reason="matches the schema")
    if kind == "regex":
        pattern = re.compile(str(options["pattern"]), re.DOTALL if options.get("dotall") else 0)
        found = pattern.fullmatch(text) if options.get("fullmatch") else pattern.search(text)
        return Outcome(passed=found is not None, reason="matches" if found else f"no match for {pattern.pattern!r}")
    if kind == "exact":
        if not row.reference:
            return Outcome(error="the row has no reference answer")
        same = (
            text.strip().casefold() == row.reference.strip().casefold()
            if options.get("ignore_case")
            else text.strip() == row.reference.strip()
        )
        return Outcome(passed=same, reason="equals the reference" if same else "differs from the reference")
    raise CurationError(f"unknown check {kind!r}")


def judge_row(run: JudgeRun, row: DatasetRow) -> Outcome:
    if run.kind == "pointwise":
        return judge_pointwise(run, row)
    if run.kind == "pairwise":
        return judge_pairwise(run, row)
    return check(run.kind, run.options, row)


def _save(run: JudgeRun, row: DatasetRow, outcome: Outcome) -> None:
    Verdict.objects.update_or_create(
        row=row,
        judge=run.judge,
        judge_version=run.judge_version,
        defaults={
            "judge_run": run,
            "kind": run.kind,
            "score": outcome.score,
            "scores": outcome.scores or {},
            "passed": outcome.passed,
            "reason": outcome.reason,
            "error": outcome.error,
        },
    )


def judge_run_execute(*, run: JudgeRun) -> JudgeRun:
    """Judge every row of the version that is not dropped, skipping rows this judge version has
    already judged (a resumed run continues). Stops early when cancel is requested."""
    claimed = JudgeRun.objects.filter(pk=run.pk, status__in=[JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING]).update(
        status=JudgeRun.Status.RUNNING
    )
    run.refresh_from_db()
    if not claimed:
        return run  # finished already (a duplicate delivery)
    job_progress.publish("judge", run.pk, status="running", progress=run.progress)
    rows = run.version.rows.exclude(status=DatasetRow.Status.DROP).order_by("pk")
    total = rows.count()
    done_ids = set(
        Verdict.objects.filter(row__version=run.version, judge=run.judge, judge_version=run.judge_version)
        .filter(error="")
        .values_list("row_id", flat=True)
    )
    errors = 0
    for i, row in enumerate(rows.iterator(chunk_size=200), 1):
        if row.pk not in done_ids:
            outcome = judge_row(run, row)
            errors += bool(outcome.error)
            _save(run, row, outcome)
        if i % PROGRESS_EVERY == 0 or i == total:
            JudgeRun.objects.filter(pk=run.pk).update(progress=i / total if total else 1.0)
            job_progress.publish("judge", run.pk, progress=i / total if total else 1.0)
            if JudgeRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
                return _finish(run, JudgeRun.Status.CANCELLED, f"Cancelled after {i} of {total} rows.")
    message = f"Judged {total} rows" + (f"; {errors} could not be judged (see their errors)." if errors else ".")
    return _finish(run, JudgeRun.Status.DONE, message)


def _finish(run: JudgeRun, status: str, message: str) -> JudgeRun:
    fields: dict[str, Any] = {"status": status, "message": message, "finished_at": timezone.now()}
    if status == JudgeRun.Status.DONE:
        fields["progress"] = 1.0
    JudgeRun.objects.filter(pk=run.pk).update(**fields)
    job_progress.publish("judge", run.pk, **fields)
    run.refresh_from_db()
    return run


def judge_run_fail(*, run_id: int, message: str) -> None:
    if (
        JudgeRun.objects.filter(pk=run_id)
        .exclude(status__in=[JudgeRun.Status.DONE, JudgeRun.Status.CANCELLED])
        .update(status=JudgeRun.Status.FAILED, message=message[:2000], finished_at=timezone.now())
    ):
        job_progress.publish("judge", run_id, status="failed", message=message)


def judge_summary(*, run: JudgeRun) -> dict[str, int]:
    """Passed / flagged / unjudged counts of a run's verdicts (after overrides)."""
    counts = {"passed": 0, "flagged": 0, "unjudged": 0}
    for v in run.verdicts.all().only("passed", "override_passed", "error"):
        if v.error:
            counts["unjudged"] += 1
        elif v.flagged:
            counts["flagged"] += 1
        else:
            counts["passed"] += 1
    return counts
