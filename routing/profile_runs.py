"""Profile runs: replay a sample of each cluster's prompts to every candidate of a policy, judge each
answer, and add the outcomes to the policy's PROFILE_RUN cells. The cost is estimated before
anything runs (a draft shows only the estimate); the run itself is a Celery task (routing/tasks.py).

The sample is deterministic, so the estimate counts the prompts the run replays: the first
`per_cluster` example prompts of each shipped cluster, or, for a policy on a clustering run, the
first `per_cluster` member traces (in trace id order: random UUIDs, so a fair sample) whose last
user message is not empty. Candidates and the judge are called through the engine's own /v1 path
(gateway.internal): aliases, retries, budgets and traces apply. The judge scores pointwise with
datasets.judge's rubric; an answer passes at the judges' threshold. A failed candidate call is an
error; an answer the judge could not score is left out. Outcomes are added prompt by prompt, so a
cancelled run keeps what it measured; a run is never resumed (it would count its prompts twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from datasets import judge as J
from datasets import prompts
from datasets.cluster_store import request_messages_of
from datasets.curation import acting_user
from datasets.models import Cluster
from datasets.selectors import cluster_member_ids
from gateway.internal import InternalCallError, chat_sync, reply_text
from gateway.resolve import parse_target
from gateway.selectors import alias_get
from opentracy_site import progress as job_progress
from traces.cost import compute_cost

from . import prior
from .learning import cells_changed
from .models import ProfileCell, ProfileRun, RoutingPolicy
from .router import compile_policy, prices

MAX_PER_CLUSTER = 100
CHARS_PER_TOKEN = 4  # rough, for the estimate only
JUDGE_REPLY_TOKENS = 60
PURPOSE_CANDIDATE = "routing_profile"
PURPOSE_JUDGE = "routing_judge"
RUN_METADATA_KEY = "opentracy_profile_run"
ROLES = ("system", "developer", "user", "assistant")
# The judge's answer says the request is wrong, not the moment: these fail the run at once.
JUDGE_CONFIG_STATUSES = (400, 401, 403, 404, 422)


class Cancelled(Exception):
    pass


class RunFailed(Exception):
    """A failure people can act on: the message is shown as is."""


@dataclass(frozen=True)
class Prompt:
    cluster: str
    messages: list[dict[str, str]]

    @property
    def tokens(self) -> int:
        return max(1, sum(len(m["content"]) for m in self.messages) // CHARS_PER_TOKEN)


# ---------------------------------------------------------------- sampling and estimate


def _replayable(raw: Any) -> list[dict[str, str]]:
    """A trace's request as plain text messages (tool calls and images dropped: the candidates get
    the conversation, not the application's tools)."""
    try:
        value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        return []
    out = []
    for m in value if isinstance(value, list) else []:
        if isinstance(m, dict) and m.get("role") in ROLES:
            text = prompts.content_text(m.get("content"))
            if text.strip():
                out.append({"role": str(m["role"]), "content": text})
    return out


def sample(policy: RoutingPolicy, per_cluster: int) -> list[Prompt]:
    """Up to `per_cluster` prompts of each of the policy's clusters (the same ones every time)."""
    keys = compile_policy(policy, evidence=[]).cluster_keys
    examples = {c.key: c.examples for c in prior.clusters()}
    found: list[Prompt] = []
    for key in keys:
        if key in examples:
            found += [Prompt(key, [{"role": "user", "content": e}]) for e in examples[key][:per_cluster]]
            continue
        cluster = Cluster.objects.filter(
            run_id=policy.clustering_run_id, identity=key, status=Cluster.Status.ACTIVE
        ).first()
        if cluster is None:
            continue
        ids = cluster_member_ids(cluster=cluster, limit=per_cluster * 4)  # some may have no user text
        raw = request_messages_of(project_id=policy.project_id, trace_ids=ids)
        taken = 0
        for trace_id in ids:
            messages = _replayable(raw.get(trace_id))
            if taken < per_cluster and prompts.prompt_text(messages, "last_user"):
                found.append(Prompt(key, messages))
                taken += 1
    return found


def _target(policy: RoutingPolicy, name: str) -> str:
    """provider/model behind a model name or an alias of the policy's project ('' if none)."""
    alias = alias_get(project=policy.project, name=name)
    target = parse_target(alias.target if alias else name)
    return f"{target.provider}/{target.model}" if target else ""


def _price(policy: RoutingPolicy, name: str) -> tuple[float, float] | None:
    target = _target(policy, name)
    if not target:
        return None
    inp, out = prices(policy.project_id, target)
    return None if math.isnan(inp) or math.isnan(out) else (inp, out)


def estimate(policy: RoutingPolicy, sampled: list[Prompt], judge: str) -> dict[str, Any]:
    """{calls, cost_usd, prompts}: one call per prompt and candidate, one judge call per answer;
    the cost from prompt sizes, the policy's expected output tokens and the pricing table (None
    when a price is unknown)."""
    candidates = list(dict.fromkeys(policy.candidates))
    answers = len(sampled) * len(candidates)
    prompt_tokens = sum(p.tokens for p in sampled)
    out_tokens = policy.expected_output_tokens
    candidate_prices = [_price(policy, model) for model in candidates]
    judge_price = _price(policy, judge)
    cost: float | None = 0.0
    if answers and (judge_price is None or any(p is None for p in candidate_prices)):
        cost = None
    elif answers and judge_price is not None:
        for price in candidate_prices:
            assert price is not None
            cost = (cost or 0.0) + (price[0] * prompt_tokens + price[1] * out_tokens * len(sampled)) / 1000
        system = len(J.POINTWISE_SYSTEM.format(rubric=J.DEFAULT_RUBRIC)) // CHARS_PER_TOKEN
        judge_in = len(candidates) * (prompt_tokens + len(sampled) * (system + out_tokens))
        cost = (cost or 0.0) + (judge_price[0] * judge_in + judge_price[1] * JUDGE_REPLY_TOKENS * answers) / 1000
    return {"calls": answers * 2, "cost_usd": None if cost is None else round(cost, 6), "prompts": len(sampled)}


# ---------------------------------------------------------------- writes


def profile_run_create(
    *, policy: RoutingPolicy, user: Any, per_cluster: int = 10, judge: str, start: bool = True
) -> ProfileRun:
    """A run with its estimate: queued (and enqueued on commit) when `start`, else a draft."""
    errors: dict[str, str] = {}
    if not policy.candidates:
        errors["policy"] = f"Routing policy `{policy.name}` has no candidates to profile."
    if isinstance(per_cluster, bool) or not isinstance(per_cluster, int) or not 1 <= per_cluster <= MAX_PER_CLUSTER:
        errors["per_cluster"] = f"A whole number of prompts per cluster from 1 to {MAX_PER_CLUSTER}."
    judge = (judge or "").strip() if isinstance(judge, str) else ""
    if not judge:
        errors["judge"] = "Name the judge: an alias or a provider/model."
    elif alias_get(project=policy.project, name=judge) is None and parse_target(judge) is None:
        errors["judge"] = f"{judge!r} is neither an alias of this project nor a known provider/model."
    if errors:
        raise ValidationError(errors)
    sampled = sample(policy, per_cluster)
    if not sampled:
        raise ValidationError(
            {"policy": f"Routing policy `{policy.name}` has no prompts to replay: its clusters have no member traces."}
        )
    run = ProfileRun.objects.create(
        policy=policy,
        per_cluster=per_cluster,
        judge=judge,
        estimate=estimate(policy, sampled, judge),
        status=ProfileRun.Status.QUEUED if start else ProfileRun.Status.DRAFT,
        created_by=acting_user(user),
    )
    if start:
        transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(run_id: int) -> None:
    from .tasks import profile_run

    profile_run.delay(run_id)


def profile_run_start(*, run: ProfileRun) -> ProfileRun:
    """Queue a draft. A finished run is not started again (its outcomes are already counted)."""
    if not ProfileRun.objects.filter(pk=run.pk, status=ProfileRun.Status.DRAFT).update(status=ProfileRun.Status.QUEUED):
        raise ValidationError(f"The profile run is {run.status}: only a draft can be started.")
    transaction.on_commit(lambda: _enqueue(run.pk))
    run.refresh_from_db()
    return run


def profile_run_cancel(*, run: ProfileRun) -> ProfileRun:
    """A draft or queued run is cancelled at once; a running one before its next call."""
    run.refresh_from_db()
    if run.finished:
        raise ValidationError(f"The profile run already finished ({run.status}).")
    job_progress.cancel(run, "profile", at_once=[ProfileRun.Status.DRAFT, ProfileRun.Status.QUEUED])
    return run


def profile_run_fail(*, run_id: int, message: str) -> None:
    if (
        ProfileRun.objects.filter(pk=run_id)
        .exclude(status__in=ProfileRun.FINISHED)
        .update(status=ProfileRun.Status.FAILED, message=message[:2000], finished_at=timezone.now())
    ):
        job_progress.publish("profile", run_id, status="failed", message=message)


# ---------------------------------------------------------------- running


@dataclass
class Progress:
    run: ProfileRun
    planned: int
    done: int = 0
    results: dict[str, Any] = field(
        default_factory=lambda: {"calls": 0, "judged": 0, "failed": 0, "unjudged": 0, "cost_usd": 0.0, "unpriced": 0}
    )
    failures: dict[str, str] = field(default_factory=dict)  # the first failure of each model

    def step(self) -> None:
        """One call done: progress saved, a cancel request honoured before the next call."""
        self.done += 1
        ProfileRun.objects.filter(pk=self.run.pk).update(progress=min(1.0, self.done / max(1, self.planned)))
        job_progress.publish("profile", self.run.pk, progress=min(1.0, self.done / max(1, self.planned)))
        if ProfileRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists():
            raise Cancelled

    def paid(self, policy: RoutingPolicy, name: str, data: dict[str, Any]) -> None:
        self.results["calls"] += 1
        usage = data.get("usage") or {}
        provider, _, model = _target(policy, name).partition("/")
        usd = compute_cost(
            project_id=policy.project_id,
            provider=provider,
            model=model,
            prompt=int(usage.get("prompt_tokens") or 0),
            completion=int(usage.get("completion_tokens") or 0),
            cached=0,
        )[2]
        if usd is None:
            self.results["unpriced"] += 1
        else:
            self.results["cost_usd"] = round(self.results["cost_usd"] + usd, 8)


def _call(run: ProfileRun, model: str, messages: list[dict[str, str]], purpose: str) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "metadata": {RUN_METADATA_KEY: str(run.pk)}}
    return chat_sync(project=run.policy.project, body=body, purpose=purpose)


def _judge(run: ProfileRun, p: Prompt, answer: str, progress: Progress) -> bool | None:
    """Whether the answer passes (None: the judge could not score it after J.ATTEMPTS tries)."""
    system = J.POINTWISE_SYSTEM.format(rubric=J.DEFAULT_RUBRIC)
    user = f"Request:\n{J._conversation(p.messages)}\n\nAnswer to evaluate:\n{answer}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    for _ in range(J.ATTEMPTS):
        try:
            data = _call(run, run.judge, messages, PURPOSE_JUDGE)
        except InternalCallError as exc:
            # A request the judge cannot take at all fails the run; one too long for it is unjudged.
            if exc.status in JUDGE_CONFIG_STATUSES and "context" not in exc.message.lower():
                raise RunFailed(f"The judge {run.judge!r} cannot be called: {exc.message}") from exc
            continue
        progress.paid(run.policy, run.judge, data)
        try:
            scores = J.parse_pointwise(reply_text(data))
        except J.JudgeAnswerError:
            continue
        scores.pop("reason")
        return sum(scores.values()) / len(J.CRITERIA) >= J.DEFAULT_THRESHOLD
    return None


def _add(policy: RoutingPolicy, cluster: str, outcomes: dict[str, list[int]]) -> None:
    """Add one prompt's outcomes ({model: [errors, samples]}) to the PROFILE_RUN cells."""
    with transaction.atomic():
        for model, (errors, samples) in outcomes.items():
            cell, _ = ProfileCell.objects.get_or_create(
                policy=policy, cluster_key=cluster, model=model, source=ProfileCell.Source.PROFILE_RUN
            )
            ProfileCell.objects.filter(pk=cell.pk).update(errors=F("errors") + errors, samples=F("samples") + samples)
        cells_changed()


def _replay(run: ProfileRun, progress: Progress, sampled: list[Prompt]) -> None:
    policy = run.policy
    candidates = list(dict.fromkeys(policy.candidates))
    per_model = progress.results.setdefault("models", {m: {"errors": 0, "samples": 0} for m in candidates})
    for p in sampled:
        outcomes: dict[str, list[int]] = {}
        try:
            for model in candidates:
                try:
                    data = _call(run, model, p.messages, PURPOSE_CANDIDATE)
                except InternalCallError as exc:
                    progress.results["failed"] += 1
                    progress.failures.setdefault(model, f"{exc.status} {exc.message}")
                    outcomes[model] = [1, 1]
                    progress.step()
                    progress.step()  # its judge call is not needed
                    continue
                progress.paid(policy, model, data)
                progress.step()
                passed = _judge(run, p, reply_text(data), progress)
                if passed is None:
                    progress.results["unjudged"] += 1
                else:
                    progress.results["judged"] += 1
                    outcomes[model] = [int(not passed), 1]
                progress.step()
        finally:  # what was measured counts, even when a cancel or a failure stops the run here
            _add(policy, p.cluster, outcomes)
            for model, (errors, samples) in outcomes.items():
                per_model[model]["errors"] += errors
                per_model[model]["samples"] += samples
            ProfileRun.objects.filter(pk=run.pk).update(results=progress.results)


def _summary(progress: Progress, sampled: list[Prompt], candidates: int, finished: bool) -> str:
    r = progress.results
    clusters = len({p.cluster for p in sampled})
    head = (
        f"Replayed {len(sampled)} prompts of {clusters} clusters to {candidates} candidates: "
        if finished
        else "Measured before it stopped: "
    )
    text = head + (
        f"{r['judged']} answers judged, {r['failed']} calls failed (counted as errors), "
        f"{r['unjudged']} answers the judge could not score (left out)."
    )
    if progress.failures:
        text += " First failures: " + "; ".join(f"{m}: {why}" for m, why in progress.failures.items())
    return text[:2000]


def execute(*, run_id: int) -> ProfileRun | None:
    """Run a queued run to its end; None when it is not queued (a duplicate delivery, or a run
    cancelled before it started). Unexpected errors propagate (the task records them)."""
    if not ProfileRun.objects.filter(pk=run_id, status=ProfileRun.Status.QUEUED).update(
        status=ProfileRun.Status.RUNNING, started_at=timezone.now()
    ):
        return None
    job_progress.publish("profile", run_id, status="running", progress=0.0)
    run = ProfileRun.objects.select_related("policy__project").get(pk=run_id)
    sampled = sample(run.policy, run.per_cluster)
    candidates = len(dict.fromkeys(run.policy.candidates))
    progress = Progress(run, planned=len(sampled) * candidates * 2)
    status, message = ProfileRun.Status.DONE, ""
    try:
        if ProfileRun.objects.filter(pk=run_id, cancel_requested=True).exists():
            raise Cancelled
        _replay(run, progress, sampled)
    except Cancelled:
        status = ProfileRun.Status.CANCELLED
        message = f"Cancelled after {progress.done} of {progress.planned} calls. "
    except RunFailed as exc:
        status, message = ProfileRun.Status.FAILED, f"{exc} "
    fields: dict[str, Any] = {
        "status": status,
        "message": (message + _summary(progress, sampled, candidates, status == ProfileRun.Status.DONE))[:2000],
        "results": progress.results,
        "finished_at": timezone.now(),
    }
    if status == ProfileRun.Status.DONE:
        fields["progress"] = 1.0
    ProfileRun.objects.filter(pk=run_id).update(**fields)
    job_progress.publish("profile", run_id, **fields)
    run.refresh_from_db()
    return run
