"""Learning Ψ from judged traffic (the TRACES source of ProfileCell) and distilled students joining
policies (the STUDENT_EVAL source). How and why: docs/routing.md, "Learning".

`learn(policy)` recomputes the policy's TRACES cells from scratch every time (idempotent, one
transaction), from three kinds of evidence, one outcome per request:
- verdicts on dataset rows answered by a candidate (a person's override first, then the newest
  judge verdict), the row's cluster found by embedding its last user message;
- provider failures of routed requests (a candidate that failed and never answered the request);
- people's feedback scores on routed traces.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from datasets import prompts
from datasets.judge import DEFAULT_THRESHOLD, LLM_KINDS
from datasets.models import DatasetRow, Verdict
from gateway.resolve import parse_target
from gateway.selectors import alias_get
from opentracy_site import clickhouse
from traces.ch_sql import ANNOTATIONS_TABLE, TRACES_TABLE

from . import embedder
from .models import ProfileCell, RoutingPolicy
from .router import Compiled, compile_policy, soft_assign

log = logging.getLogger(__name__)

# Error classes of a failed upstream call that say nothing about the model: the engine's own
# cooldown (no call was made) and a rejected credential (configuration, fixed by a person).
NOT_THE_MODEL = ("upstream_cooling_down", "upstream_auth_error")

Key = tuple[str, str]  # (cluster key, candidate)


@dataclass
class Tally:
    """Errors and samples per (cluster, candidate), and what they came from."""

    cells: dict[Key, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, key: Key, error: bool, source: str) -> None:
        cell = self.cells[key]
        cell[0] += float(error)
        cell[1] += 1
        self.counts[source] += 1


def model_name(name: str) -> str:
    """`gpt-4o` and `openai/gpt-4o` are one model: the provider/model form the gateway records."""
    target = parse_target(name)
    return target.name if target is not None else name


def candidates_of(policy: RoutingPolicy) -> dict[str, str]:
    """The recorded (normalised) model name → the candidate as the policy spells it."""
    return {model_name(c): c for c in policy.candidates}


def clusters_of(compiled: Compiled, texts: list[str]) -> list[str]:
    """The most likely cluster of each prompt, embedded in one batch."""
    if not texts or not compiled.cluster_keys:
        return ["" for _ in texts]
    weights = soft_assign(compiled, embedder.embed_many(texts))
    return [compiled.cluster_keys[i] for i in np.argmax(weights, axis=1)]


def prompt_of(messages: Any) -> str:
    """What a row is routed on: its last user message (as datasets.prompts reads it), capped."""
    return prompts.capped(prompts.prompt_text(messages, "last_user"))[0]


def cells_changed() -> None:
    """Compiled policies are cached by the gateway; bulk writes send no model signals."""
    from . import cache

    transaction.on_commit(cache.invalidate)


# ---------------------------------------------------------------- evidence


def _row_key(trace_id: Any, model: str, messages: Any) -> str:
    """One outcome per request: rows copied by freezing a version (or a trace in two datasets)
    are one request; an imported row without a trace is its model and prompt."""
    if trace_id:
        return str(trace_id)
    return model + ":" + hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()


def verdict_outcomes(policy: RoutingPolicy) -> list[tuple[str, str, Any, bool]]:
    """(request key, candidate, messages, error) from dataset verdicts on rows a candidate
    answered: a person's override wins, then the newest verdict. Rows a person edited are left out
    (their verdicts judged the person's text, not the model's)."""
    names = candidates_of(policy)
    found = (
        Verdict.objects.filter(
            row__version__dataset__project_id=policy.project_id,
            row__model__in={*names, *names.values()},
            row__edited_response="",
        )
        .filter(error="")
        .filter(Q(override_passed__isnull=False) | Q(passed__isnull=False))
        .values_list("row__trace_id", "row__model", "row__messages", "passed", "override_passed", "created_at", "pk")
    )
    best: dict[str, tuple[tuple[bool, datetime, int], str, Any, bool]] = {}
    for trace_id, model, messages, passed, override, created, pk in found.iterator(chunk_size=2000):
        candidate = names.get(model_name(model))
        if candidate is None:
            continue
        key = _row_key(trace_id, candidate, messages)
        rank = (override is not None, created, pk)
        if key not in best or rank > best[key][0]:
            verdict = override if override is not None else passed
            best[key] = (rank, candidate, messages, verdict is False)
    return [(key, model, messages, error) for key, (_rank, model, messages, error) in best.items()]


def _since() -> datetime:
    return datetime.now(UTC) - timedelta(days=settings.OPENTRACY_ROUTER_LEARN_DAYS)


# A failed attempt: a server-side status, or an upstream/timeout error class, unless the failure
# says nothing about the model (NOT_THE_MODEL).
_FAILED = (
    "(tupleElement(a, 'status') >= 500 OR startsWith(tupleElement(a, 'error_class'), 'upstream_')"
    " OR positionCaseInsensitive(tupleElement(a, 'error_class'), 'timeout') > 0)"
    " AND tupleElement(a, 'error_class') NOT IN {skip:Array(String)}"
)
_TRACE_FAILED = (
    "(status >= 500 OR startsWith(error_class, 'upstream_') OR positionCaseInsensitive(error_class, 'timeout') > 0)"
    " AND error_class NOT IN {skip:Array(String)}"
)


def provider_failures(policy: RoutingPolicy) -> list[tuple[str, str, str]]:
    """(trace id, cluster key, candidate) for each routed request a candidate failed and never
    answered: a failed attempt with no later success on the same target (a retry that worked is
    not a failure), or the answering model's failure after its first byte (a broken stream)."""
    names = candidates_of(policy)
    sql = (
        f"SELECT trace_id, route_cluster, resolved_model, {_TRACE_FAILED} AS trace_failed,"  # noqa: S608
        f" arrayMap(a -> tupleElement(a, 'target'), arrayFilter(a -> {_FAILED}, attempts)) AS failed,"
        " arrayMap(a -> tupleElement(a, 'target'), arrayFilter(a -> tupleElement(a, 'status') = 200, attempts))"
        f" AS answered FROM {TRACES_TABLE} WHERE project_id = {{p:UInt64}} AND route_policy = {{name:String}}"
        " AND timestamp >= {since:DateTime64(3, 'UTC')} AND route_cluster != ''"
        f" AND ({_TRACE_FAILED} OR arrayExists(a -> {_FAILED}, attempts))"
    )
    params = {"p": policy.project_id, "name": policy.name, "since": _since(), "skip": list(NOT_THE_MODEL)}
    out = []
    for trace_id, cluster, resolved, trace_failed, failed_targets, answered in clickhouse.query(sql, params)[1]:
        failed = set(failed_targets) - set(answered)
        if trace_failed and resolved:
            failed.add(resolved)
        out += [(str(trace_id), cluster, names[m]) for m in sorted(failed) if m in names]
    return out


def feedback_outcomes(policy: RoutingPolicy) -> list[tuple[str, str, str, bool]]:
    """(trace id, cluster key, candidate, error) from people's latest feedback score (0-10) on the
    policy's successful routed traces; below the judges' pass threshold is an error."""
    names = candidates_of(policy)
    sql = f"""
        SELECT t.trace_id, t.route_cluster, t.resolved_model, f.score
        FROM (
            SELECT trace_id, argMax(tuple(score), created_at).1 AS score FROM {ANNOTATIONS_TABLE}
            WHERE project_id = {{p:UInt64}} AND kind = 'feedback' GROUP BY trace_id
        ) AS f
        INNER JOIN (
            SELECT trace_id, route_cluster, resolved_model FROM {TRACES_TABLE}
            WHERE project_id = {{p:UInt64}} AND route_policy = {{name:String}}
              AND timestamp >= {{since:DateTime64(3, 'UTC')}} AND status = 200 AND route_cluster != ''
        ) AS t ON f.trace_id = t.trace_id
        WHERE f.score IS NOT NULL
    """  # noqa: S608 (table names are constants)
    rows = clickhouse.query(sql, {"p": policy.project_id, "name": policy.name, "since": _since()})[1]
    return [
        (str(t), cluster, names[m], float(score) < DEFAULT_THRESHOLD) for t, cluster, m, score in rows if m in names
    ]


# ---------------------------------------------------------------- learning


def evidence(policy: RoutingPolicy) -> Tally:
    """Everything the policy's traffic says, one outcome per request: a dataset verdict (people
    curated it) over feedback on the same trace; a provider failure is one more outcome."""
    compiled = compile_policy(policy, evidence=[])
    keys = set(compiled.cluster_keys)
    tally = Tally()
    verdicts = verdict_outcomes(policy)
    texts = [prompt_of(messages) for _key, _m, messages, _e in verdicts]
    kept = [i for i, t in enumerate(texts) if t]
    clusters = clusters_of(compiled, [texts[i] for i in kept])
    judged: set[str] = set()
    for i, cluster in zip(kept, clusters, strict=True):
        key, model, _messages, error = verdicts[i]
        judged.add(key)
        tally.add((cluster, model), error, "verdicts")
    for trace_id, cluster, model, error in feedback_outcomes(policy):
        if trace_id not in judged and cluster in keys:
            tally.add((cluster, model), error, "feedback")
    for _trace_id, cluster, model in provider_failures(policy):
        if cluster in keys:
            tally.add((cluster, model), True, "provider_errors")
    return tally


def learn(policy: RoutingPolicy) -> dict[str, int]:
    """Replace the policy's TRACES cells with what its traffic says now. Returns the counts."""
    tally = evidence(policy)
    cells = [
        ProfileCell(
            policy=policy,
            cluster_key=cluster,
            model=model,
            source=ProfileCell.Source.TRACES,
            errors=errors,
            samples=int(samples),
        )
        for (cluster, model), (errors, samples) in sorted(tally.cells.items())
    ]
    with transaction.atomic():
        ProfileCell.objects.filter(policy=policy, source=ProfileCell.Source.TRACES).delete()
        ProfileCell.objects.bulk_create(cells)
        cells_changed()
    return {
        "verdicts": tally.counts["verdicts"],
        "feedback": tally.counts["feedback"],
        "provider_errors": tally.counts["provider_errors"],
        "cells": len(cells),
    }


def learn_all() -> dict[str, dict[str, Any]]:
    """`learn` for every policy; one policy's failure is logged and the others still learn."""
    out: dict[str, dict[str, Any]] = {}
    for policy in RoutingPolicy.objects.order_by("pk"):
        try:
            out[str(policy.pk)] = learn(policy)
        except Exception as exc:  # a bad policy must not stop the others; the next beat retries it
            log.exception("routing: learning policy %s failed", policy.pk)
            out[str(policy.pk)] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# ---------------------------------------------------------------- students joining


def _teachers(student: Any) -> set[str]:
    """The models the student was distilled from: the job's teacher (an alias resolved, unless it
    now points at the student) and the target the approval replaced."""
    from distillation.models import Student

    job = student.job
    found = {job.teacher, student.replaced_target}
    alias = alias_get(project=job.project, name=job.teacher)
    if alias is not None and alias.target != student.model:
        found.add(alias.target)
    served = {s.model for s in Student.objects.filter(project_id=student.project_id)}  # students teach nobody
    return {model_name(t) for t in found if t and not t.startswith("local/") and t not in served}


def _student_outcomes(student: Any) -> list[tuple[Any, bool]]:
    """(row messages, error) per held-out row the evaluation kept: the student's judge score under
    the pass threshold is an error (checks score 1 or 0); a row the judge could not score counts
    by exact agreement with the teacher's answer."""
    from distillation.jobs import _norm

    job = student.job
    evaluation = job.evaluation or {}
    llm = job.judge_kind in LLM_KINDS
    threshold = float((job.judge_options or {}).get("threshold", DEFAULT_THRESHOLD)) if llm else 1.0
    shown = [r for r in evaluation.get("rows") or [] if isinstance(r, dict) and "row" in r]
    messages = dict(DatasetRow.objects.filter(pk__in=[r["row"] for r in shown]).values_list("pk", "messages"))
    out = []
    for r in shown:
        if r["row"] not in messages:
            continue
        score = (r.get("scores") or {}).get("student")
        answers = r.get("answers") or {}
        if score is not None:
            out.append((messages[r["row"]], float(score) < threshold))
        elif "student" in answers and "teacher" in answers:
            out.append((messages[r["row"]], _norm(answers["student"]) != _norm(answers["teacher"])))
    return out


def _joinable(student: Any) -> list[RoutingPolicy]:
    """The project's policies that have one of the student's teachers as a candidate."""
    teachers = _teachers(student)
    policies = RoutingPolicy.objects.filter(project_id=student.project_id).order_by("pk")
    return [p for p in policies if teachers & set(candidates_of(p))]


def student_join(*, student: Any) -> list[int]:
    """Add the student's model (`local/<name>` or `vllm/<name>`, as it is served) to every policy of
    its project that has the student's teacher as a candidate, with its held-out evaluation as its
    STUDENT_EVAL cells (replacing earlier ones, so a second call changes nothing). Returns the ids of
    the policies it joined."""
    model = student.model
    policies = _joinable(student)
    if not policies:
        return []
    outcomes = _student_outcomes(student)
    texts = [prompt_of(messages) for messages, _error in outcomes]
    kept = [i for i, t in enumerate(texts) if t]
    vectors = embedder.embed_many([texts[i] for i in kept])
    with transaction.atomic():
        for policy in policies:
            if model not in policy.candidates:
                policy.candidates = [*policy.candidates, model]
                policy.save(update_fields=["candidates", "updated_at"])
            compiled = compile_policy(policy, evidence=[])
            tally = Tally()
            if len(kept) and compiled.cluster_keys:
                top = np.argmax(soft_assign(compiled, vectors), axis=1)
                for i, k in zip(kept, top, strict=True):
                    tally.add((compiled.cluster_keys[k], model), outcomes[i][1], "student_eval")
            ProfileCell.objects.filter(policy=policy, model=model, source=ProfileCell.Source.STUDENT_EVAL).delete()
            ProfileCell.objects.bulk_create(
                ProfileCell(
                    policy=policy,
                    cluster_key=cluster,
                    model=m,
                    source=ProfileCell.Source.STUDENT_EVAL,
                    errors=errors,
                    samples=int(samples),
                )
                for (cluster, m), (errors, samples) in sorted(tally.cells.items())
            )
        cells_changed()
    return [p.pk for p in policies]


def student_leave(*, student: Any) -> list[int]:
    """Take a rolled-back student out of its project's policies (candidate and cells), so routing
    stops sending traffic to a model the people who approved it have withdrawn. Returns the ids
    of the policies it left."""
    model = student.model
    left = []
    with transaction.atomic():
        for policy in RoutingPolicy.objects.select_for_update().filter(project_id=student.project_id):
            if model in policy.candidates:
                policy.candidates = [c for c in policy.candidates if c != model]
                if policy.default_model == model:
                    policy.default_model = ""
                policy.save(update_fields=["candidates", "default_model", "updated_at"])
                left.append(policy.pk)
        ProfileCell.objects.filter(policy__project_id=student.project_id, model=model).delete()
    cells_changed()
    return left


def student_approved(*, student: Any) -> None:
    """Called by distillation's approval: the student joins its project's policies once the
    approval commits, on the worker (embedding its evaluation rows loads the router's model). No
    task is sent when no policy routes to its teacher."""
    if not _joinable(student):
        return

    def enqueue() -> None:
        from .tasks import student_join as task

        task.delay(student.pk)

    transaction.on_commit(enqueue)
