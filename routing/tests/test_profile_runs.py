"""Profile runs (routing/profile_runs.py): the estimate before anything runs, a run through the
embedded Celery worker with the fake OpenAI upstream's scripted models as candidates and judge
(called through the engine's own /v1 path), cells added, cancel, and failures recorded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from datasets.tests.dataset_support import cluster_of
from gateway import failover
from gateway.models import ModelPrice
from gateway.services import alias_set
from routing import embedder, prior, tasks
from routing import profile_runs as P
from routing.models import ProfileCell, ProfileRun, RoutingPolicy
from traces.cost import invalidate_overrides

pytestmark = pytest.mark.django_db(transaction=True)

GOOD, BAD, DOWN = "openai/scripted-good", "openai/scripted-bad", "openai/error-500"
KEYS = [c.key for c in prior.clusters()]


def _answer_under_review(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"]).rsplit("Answer to evaluate:\n", 1)[-1]


def _judge_reply(body: dict[str, Any]) -> str:
    n = 9 if "good" in _answer_under_review(body) else 3
    return f"```json\n{json.dumps({'correctness': n, 'helpfulness': n, 'format': n, 'reason': 'x'})}\n```"


@pytest.fixture
def fake(people: dict[str, Any], providers: dict[str, Any]) -> Iterator[Any]:
    alias_set(project=people["project"], name="judge", target="openai/scripted-judge", changed_by="test")
    upstream = providers["openai"]
    upstream.scripts.clear()
    upstream.scripts["scripted-good"] = [lambda body: f"A good answer to: {body['messages'][-1]['content']}"]
    upstream.scripts["scripted-bad"] = ["I would rather not."]
    upstream.scripts["scripted-judge"] = [_judge_reply]
    failover.reset()
    yield upstream
    failover.reset()  # DOWN's failures start a cooldown other tests must not inherit


@pytest.fixture
def policy(people: dict[str, Any]) -> RoutingPolicy:
    return RoutingPolicy.objects.create(project=people["project"], name="support", candidates=[GOOD, BAD, DOWN])


def cells(policy: RoutingPolicy) -> dict[tuple[str, str], tuple[float, int]]:
    found = ProfileCell.objects.filter(policy=policy, source=ProfileCell.Source.PROFILE_RUN)
    return {(c.cluster_key, c.model): (c.errors, c.samples) for c in found}


def requests_to(upstream: Any, model: str) -> int:
    return sum(1 for r in upstream.requests if (r.get("body") or {}).get("model") == model)


def test_the_estimate_comes_first(people: dict[str, Any], policy: RoutingPolicy, fake: Any) -> None:
    sent = len(fake.requests)
    run = P.profile_run_create(policy=policy, user=people["owner"], per_cluster=2, judge="judge", start=False)
    assert run.status == ProfileRun.Status.DRAFT and run.created_by == people["owner"]
    # 6 shipped clusters × 2 examples, each to 3 candidates, and each answer judged; the fakes have no price.
    assert run.estimate == {"calls": 72, "cost_usd": None, "prompts": 12}
    assert len(fake.requests) == sent  # nothing was called

    price = {"input_per_mtok": Decimal("1"), "output_per_mtok": Decimal("2")}
    for model in (GOOD, BAD, DOWN):
        ModelPrice.objects.create(project=people["project"], model=model, **price)
    ModelPrice.objects.create(
        project=people["project"], model="openai/scripted-judge", input_per_mtok=0, output_per_mtok=0
    )
    invalidate_overrides()  # prices are cached for a while
    priced = P.profile_run_create(policy=policy, user=people["owner"], per_cluster=2, judge="judge", start=False)
    examples = [e for c in prior.clusters() for e in c.examples[:2]]
    prompt_tokens = sum(max(1, len(e) // 4) for e in examples)  # the 4-characters-a-token rule
    per_candidate = (1 * prompt_tokens + 2 * policy.expected_output_tokens * len(examples)) / 1_000_000
    assert priced.estimate["cost_usd"] == pytest.approx(3 * per_candidate, abs=1e-6)


@pytest.mark.parametrize(
    ("kw", "field", "message"),
    [
        ({"per_cluster": 0}, "per_cluster", "from 1 to 100"),
        ({"per_cluster": 101}, "per_cluster", "from 1 to 100"),
        ({"per_cluster": True}, "per_cluster", "from 1 to 100"),
        ({"judge": ""}, "judge", "Name the judge"),
        ({"judge": "no-such-alias"}, "judge", "neither an alias of this project nor a known provider/model"),
    ],
)
def test_bad_input_is_refused(
    people: dict[str, Any], policy: RoutingPolicy, kw: dict[str, Any], field: str, message: str
) -> None:
    args: dict[str, Any] = {"per_cluster": 2, "judge": "openai/gpt-4o", **kw}
    with pytest.raises(ValidationError) as caught:
        P.profile_run_create(policy=policy, user=None, start=False, **args)
    assert message in " ".join(caught.value.message_dict[field])
    assert not ProfileRun.objects.exists()


def test_a_policy_without_candidates_or_prompts_is_refused(people: dict[str, Any]) -> None:
    empty = RoutingPolicy.objects.create(project=people["project"], name="empty", candidates=[])
    with pytest.raises(ValidationError, match="has no candidates to profile"):
        P.profile_run_create(policy=empty, user=None, judge="openai/gpt-4o")
    cluster = cluster_of(people["project"], [{"prompt": "", "answer": "x"}])  # members, but no user text
    cluster.centroid = embedder.embed_many(["invoice"])[0].tobytes()
    cluster.save()
    on_run = RoutingPolicy.objects.create(
        project=people["project"], name="on-run", candidates=[GOOD], clustering_run=cluster.run
    )
    with pytest.raises(ValidationError, match="has no prompts to replay"):
        P.profile_run_create(policy=on_run, user=None, judge="openai/gpt-4o")


def test_a_policy_on_a_clustering_run_replays_member_traces(
    people: dict[str, Any], fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(P, "_enqueue", lambda run_id: None)  # driven directly here
    prompts = ["Where is my invoice for March?", "", "Send me the invoice again", "Invoice total looks wrong"]
    cluster = cluster_of(people["project"], [{"prompt": p, "answer": "ok"} for p in prompts])
    vectors = embedder.embed_many([p for p in prompts if p])
    centroid = vectors.mean(axis=0)
    cluster.centroid = (centroid / np.linalg.norm(centroid)).astype(np.float32).tobytes()
    cluster.save()
    policy = RoutingPolicy.objects.create(
        project=people["project"], name="invoices", candidates=[GOOD], clustering_run=cluster.run
    )
    sampled = P.sample(policy, 2)
    assert [p.cluster for p in sampled] == [str(cluster.identity)] * 2
    assert all(
        p.messages[0]["role"] == "user" and p.messages[0]["content"] in prompts[:1] + prompts[2:] for p in sampled
    )
    assert len(P.sample(policy, 10)) == 3  # the member with no user text is left out

    run = P.profile_run_create(policy=policy, user=None, per_cluster=10, judge="judge", start=False)
    assert run.estimate["prompts"] == 3 and run.estimate["calls"] == 6
    assert P.profile_run_start(run=run).status == ProfileRun.Status.QUEUED
    done = P.execute(run_id=run.pk)
    assert done is not None and done.status == ProfileRun.Status.DONE, done and done.message
    assert cells(policy) == {(str(cluster.identity), GOOD): (0, 3)}


def test_a_run_through_the_worker_judges_every_answer(people: dict[str, Any], policy: RoutingPolicy, fake: Any) -> None:
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()
    judged_before, good_before = requests_to(fake, "scripted-judge"), requests_to(fake, "scripted-good")
    ProfileCell.objects.create(
        policy=policy, cluster_key=KEYS[0], model=GOOD, source=ProfileCell.Source.PROFILE_RUN, errors=1, samples=1
    )
    run = P.profile_run_create(policy=policy, user=people["owner"], per_cluster=2, judge="judge")
    assert run.status == ProfileRun.Status.QUEUED
    deadline = time.monotonic() + 120
    while not run.finished:
        assert time.monotonic() < deadline, f"profile run stuck at {run.status} {run.progress}"
        time.sleep(0.2)
        run.refresh_from_db()
    assert run.status == ProfileRun.Status.DONE, run.message
    assert run.progress == 1.0 and run.started_at is not None and run.finished_at is not None
    r = run.results
    assert (r["calls"], r["judged"], r["failed"], r["unjudged"]) == (48, 24, 12, 0)  # 24 answers + 24 verdicts
    assert r["models"] == {
        GOOD: {"errors": 0, "samples": 12},
        BAD: {"errors": 12, "samples": 12},
        DOWN: {"errors": 12, "samples": 12},
    }
    assert r["unpriced"] == 48 and r["cost_usd"] == 0.0
    assert "12 calls failed (counted as errors)" in run.message and f"{DOWN}: 5" in run.message
    expected = {(k, m): (e, 2) for k in KEYS for m, e in ((GOOD, 0), (BAD, 2), (DOWN, 2))}
    expected[(KEYS[0], GOOD)] = (1, 3)  # added to what the cell held
    assert cells(policy) == expected
    assert requests_to(fake, "scripted-judge") - judged_before == 24
    assert requests_to(fake, "scripted-good") - good_before == 12


def test_cancel(people: dict[str, Any], policy: RoutingPolicy, fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_enqueue", lambda run_id: None)
    draft = P.profile_run_create(policy=policy, user=None, per_cluster=1, judge="judge", start=False)
    assert P.profile_run_cancel(run=draft).status == ProfileRun.Status.CANCELLED
    assert P.execute(run_id=draft.pk) is None  # never runs
    with pytest.raises(ValidationError, match="already finished"):
        P.profile_run_cancel(run=draft)
    with pytest.raises(ValidationError, match="only a draft can be started"):
        P.profile_run_start(run=draft)

    run = P.profile_run_create(policy=policy, user=None, per_cluster=1, judge="judge")
    bad_before = requests_to(fake, "scripted-bad")
    real_judge = P._judge

    def judge_then_cancel(run_: ProfileRun, *args: Any) -> bool | None:
        P.profile_run_cancel(run=run_)  # someone presses cancel while the first answer is judged
        return real_judge(run_, *args)

    monkeypatch.setattr(P, "_judge", judge_then_cancel)
    cancelled = P.execute(run_id=run.pk)
    assert cancelled is not None and cancelled.status == ProfileRun.Status.CANCELLED
    assert cancelled.message.startswith("Cancelled after 2 of 36 calls.")
    assert cells(policy) == {(KEYS[0], GOOD): (0, 1)}  # what it measured before stopping counts
    assert requests_to(fake, "scripted-bad") == bad_before  # the next candidate was never asked


def test_failures_are_recorded(
    people: dict[str, Any], policy: RoutingPolicy, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(P, "_enqueue", lambda run_id: None)
    # A judge the engine refuses (the fake upstream answers 400) fails the run with the reason.
    created = P.profile_run_create(policy=policy, user=None, per_cluster=1, judge="openai/error-400")
    failed = P.execute(run_id=created.pk)
    assert failed is not None and failed.status == ProfileRun.Status.FAILED
    assert failed.message.startswith("The judge 'openai/error-400' cannot be called: openai: Fake upstream error 400.")
    assert "Measured before it stopped: 0 answers judged, 0 calls failed" in failed.message
    assert failed.finished_at is not None and failed.progress < 1.0
    assert not cells(policy)  # the first answer was never judged

    # Anything unexpected: the task records it on the run (and re-raises for Celery's log).
    def broken(policy: RoutingPolicy, per_cluster: int) -> list[P.Prompt]:
        raise RuntimeError("the sample could not be read")

    monkeypatch.setattr(P, "sample", broken)
    run = ProfileRun.objects.create(policy=policy, per_cluster=1, judge="judge")
    with pytest.raises(RuntimeError):
        tasks.profile_run(run.pk)
    run.refresh_from_db()
    assert run.status == ProfileRun.Status.FAILED and run.message == "RuntimeError: the sample could not be read"
    assert tasks.profile_run(run.pk) == "skipped"  # a duplicate delivery does nothing
