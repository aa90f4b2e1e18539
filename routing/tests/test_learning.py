"""Learning Ψ from judged traffic (routing/learning.py): dataset verdicts and people's overrides,
provider failures and feedback on routed traces (written through the real trace writer into
chDB), idempotence, and the Celery beat schedule firing learn_all through the embedded worker."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings

from datasets import curation as C
from datasets import judge as J
from datasets.models import Dataset, DatasetRow, Verdict
from routing import learning, prior
from routing.models import ProfileCell, RoutingPolicy
from traces.services import annotation_add
from traces.writer import get_writer

pytestmark = pytest.mark.django_db(transaction=True)

A, B, OTHER = "openai/model-a", "openai/model-b", "openai/not-a-candidate"
EXAMPLES = {c.key: c.examples for c in prior.clusters()}
CODE, SCIENCE, READING = "prior:code", "prior:expert-science", "prior:reading"


@pytest.fixture
def policy(people: dict[str, Any]) -> RoutingPolicy:
    return RoutingPolicy.objects.create(project=people["project"], name="support", candidates=[A, B])


def cells(policy: RoutingPolicy, source: str = ProfileCell.Source.TRACES) -> dict[tuple[str, str], tuple[float, int]]:
    found = ProfileCell.objects.filter(policy=policy, source=source)
    return {(c.cluster_key, c.model): (c.errors, c.samples) for c in found}


def judged_dataset(people: dict[str, Any], lines: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Dataset:
    """Rows judged by the real exact-match check: an answer equal to its reference passes."""
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)  # driven here, not by a worker
    data = "\n".join(json.dumps(line) for line in lines).encode()
    dataset = C.dataset_import_jsonl(project=people["project"], name="Judged", file=data, user=people["owner"])
    run = J.judge_run_create(version=C.open_version(dataset=dataset), kind="exact", user=people["owner"])
    assert J.judge_run_execute(run=run).status == "done"
    return dataset


def line(prompt: str, model: str, passed: bool) -> dict[str, Any]:
    return {"prompt": prompt, "model": model, "response": "ok", "reference": "ok" if passed else "something else"}


def verdict_of(dataset: Dataset, prompt: str) -> Verdict:
    version = C.open_version(dataset=dataset)
    return Verdict.objects.get(row__version=version, row__messages=[{"role": "user", "content": prompt}])


def test_verdicts_and_overrides_move_the_right_cells(
    people: dict[str, Any], policy: RoutingPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, science = EXAMPLES[CODE], EXAMPLES[SCIENCE]
    edited = code[4]
    dataset = judged_dataset(
        people,
        [
            line(code[0], A, True),
            line(code[1], A, False),
            line(code[2], A, True),
            line(science[0], A, False),
            line(science[1], B, True),
            line(code[3], OTHER, False),  # not a candidate of the policy
            line(edited, A, False),
        ],
        monkeypatch,
    )
    row = DatasetRow.objects.get(messages=[{"role": "user", "content": edited}])
    C.row_edit_response(row=row, text="a person's better answer", user=people["owner"], revision=row.revision)
    kept = ProfileCell.objects.create(
        policy=policy, cluster_key=CODE, model=A, source=ProfileCell.Source.PROFILE_RUN, errors=4, samples=5
    )

    counts = learning.learn(policy)
    # The edited row's verdict judged the person's text, not model A's: left out.
    assert cells(policy) == {(CODE, A): (1, 3), (SCIENCE, A): (1, 1), (SCIENCE, B): (0, 1)}
    assert counts == {"verdicts": 5, "feedback": 0, "provider_errors": 0, "cells": 3}

    # A person's override wins over the judge.
    C.verdict_override(verdict=verdict_of(dataset, code[1]), passed=True, user=people["member"])
    C.verdict_override(verdict=verdict_of(dataset, science[1]), passed=False, user=people["member"])
    learning.learn(policy)
    assert cells(policy) == {(CODE, A): (0, 3), (SCIENCE, A): (1, 1), (SCIENCE, B): (1, 1)}

    # Freezing copies rows and verdicts into the next version: still one outcome per request, and
    # an override on the open version (the newer verdict) wins over the frozen one.
    C.version_freeze(version=C.open_version(dataset=dataset), user=people["owner"])
    learning.learn(policy)
    assert cells(policy) == {(CODE, A): (0, 3), (SCIENCE, A): (1, 1), (SCIENCE, B): (1, 1)}
    C.verdict_override(verdict=verdict_of(dataset, code[1]), passed=False, user=people["member"])
    learning.learn(policy)
    assert cells(policy)[(CODE, A)] == (1, 3)

    # Other sources are never touched; learning again changes nothing; the evidence gone, the cells go.
    assert ProfileCell.objects.get(pk=kept.pk).samples == 5
    before = cells(policy)
    assert learning.learn(policy)["cells"] == 3 and cells(policy) == before
    dataset.delete()
    assert learning.learn(policy)["cells"] == 0 and cells(policy) == {}
    assert cells(policy, ProfileCell.Source.PROFILE_RUN) == {(CODE, A): (4, 5)}


def routed(project_id: int, **fields: Any) -> dict[str, Any]:
    """A routed trace record for the writer (as the gateway would write it)."""
    record = {
        "trace_id": str(uuid.uuid4()),
        "project_id": project_id,
        "timestamp": datetime.now(UTC).timestamp(),
        "requested_model": "auto",
        "request_messages": json.dumps([{"role": "user", "content": "hello"}]),
        "route_policy": "support",
        "status": 200,
        "latency_ms": 10.0,
    }
    record.update(fields)
    record.setdefault("provider", str(record.get("resolved_model", "")).split("/")[0])
    return record


def test_provider_failures_and_feedback_on_routed_traces(
    people: dict[str, Any], policy: RoutingPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, other_pid = people["project"].id, people["other_project"].id
    failover = [(A, 503, "upstream_error", 5.0), (B, 200, "", 9.0)]
    records = {
        # A failed and B answered: A's error.
        "fell_back": routed(pid, route_cluster=CODE, resolved_model=B, attempts=failover),
        # A failed once, then its retry answered: no failure.
        "retried": routed(
            pid, route_cluster=CODE, resolved_model=A, attempts=[(A, 500, "upstream_error", 5.0), (A, 200, "", 5.0)]
        ),
        "timeout": routed(
            pid,
            route_cluster=READING,
            resolved_model=B,
            status=504,
            error_class="upstream_timeout",
            attempts=[(B, 504, "upstream_timeout", 2000.0)],
        ),
        # The engine's own cooldown: no call was made, nothing learned.
        "cooling": routed(
            pid,
            route_cluster=CODE,
            resolved_model=A,
            status=503,
            error_class="upstream_cooling_down",
            attempts=[(A, 503, "upstream_cooling_down", 0.1)],
        ),
        # A stream that broke after its first byte: the answering model failed.
        "broken": routed(
            pid,
            route_cluster=CODE,
            resolved_model=A,
            status=502,
            error_class="upstream_stream_broken",
            attempts=[(A, 200, "", 5.0)],
        ),
        "other_policy": routed(pid, route_cluster=CODE, resolved_model=B, attempts=failover, route_policy="other"),
        "too_old": routed(
            pid,
            route_cluster=CODE,
            resolved_model=B,
            attempts=failover,
            timestamp=(datetime.now(UTC) - timedelta(days=settings.OPENTRACY_ROUTER_LEARN_DAYS + 1)).timestamp(),
        ),
        "other_project": routed(other_pid, route_cluster=CODE, resolved_model=B, attempts=failover),
        "liked": routed(pid, route_cluster=CODE, resolved_model=A, attempts=[(A, 200, "", 5.0)]),
        "changed_mind": routed(pid, route_cluster=READING, resolved_model=B, attempts=[(B, 200, "", 5.0)]),
        "comment_only": routed(pid, route_cluster=READING, resolved_model=B, attempts=[(B, 200, "", 5.0)]),
        "also_curated": routed(pid, route_cluster=CODE, resolved_model=A, attempts=[(A, 200, "", 5.0)]),
    }
    writer = get_writer()
    for record in records.values():
        writer.submit(dict(record))
    writer.flush()

    def feedback(name: str, score: float | None, comment: str = "") -> None:
        trace_id = uuid.UUID(records[name]["trace_id"])
        annotation_add(project_id=pid, trace_id=trace_id, user_id=people["owner"].pk, score=score, comment=comment)
        time.sleep(0.005)  # annotations are ordered by their millisecond timestamps

    feedback("liked", 9)
    feedback("changed_mind", 9)
    feedback("changed_mind", 2)  # the latest score counts
    feedback("comment_only", 3)
    feedback("comment_only", None, "never mind the score")  # the latest feedback has no score
    feedback("also_curated", 1)
    # The same request curated into a dataset and judged: the verdict counts, not the feedback.
    dataset = judged_dataset(people, [line(EXAMPLES[CODE][0], A, True)], monkeypatch)
    DatasetRow.objects.filter(version__dataset=dataset).update(trace_id=records["also_curated"]["trace_id"])

    counts = learning.learn(policy)
    assert counts == {"verdicts": 1, "feedback": 2, "provider_errors": 3, "cells": 2}
    # code × A: fell_back and broken failed, liked and the curated one passed; reading × B: the
    # timeout and the changed mind.
    assert cells(policy) == {(CODE, A): (2, 4), (READING, B): (2, 2)}


def test_learn_all_learns_every_policy_and_survives_a_bad_one(
    people: dict[str, Any], policy: RoutingPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    judged_dataset(people, [line(EXAMPLES[CODE][0], A, False)], monkeypatch)
    other = RoutingPolicy.objects.create(project=people["other_project"], name="support", candidates=[A])
    real = learning.evidence

    def fails_for_other(p: RoutingPolicy) -> learning.Tally:
        if p.pk == other.pk:
            raise RuntimeError("boom")
        return real(p)

    monkeypatch.setattr(learning, "evidence", fails_for_other)
    out = learning.learn_all()
    assert out[str(policy.pk)]["cells"] == 1 and out[str(other.pk)] == {"error": "RuntimeError: boom"}
    assert cells(policy) == {(CODE, A): (1, 1)}


def test_learn_all_is_on_the_beat_schedule() -> None:
    from opentracy_site.celery import app
    from routing import tasks

    entry = app.conf.beat_schedule["routing.learn_all"]
    assert entry["task"] == tasks.learn_all.name == "routing.learn_all"
    assert entry["schedule"] == settings.OPENTRACY_ROUTER_LEARN_INTERVAL_S == 600.0
    assert entry["options"] == {"queue": "default"}
    assert "routing.learn_all" in app.tasks


def test_the_embedded_beat_fires_learn_all(
    people: dict[str, Any], policy: RoutingPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schedule, at a short interval, through Celery beat on its thread and the embedded worker."""
    from opentracy_site import worker
    from opentracy_site.celery import app

    judged_dataset(people, [line(EXAMPLES[SCIENCE][0], B, False)], monkeypatch)
    worker.start_embedded_worker()
    worker.stop_embedded_beat()  # one with the configured 10-minute interval may be running
    entry = {**app.conf.beat_schedule["routing.learn_all"], "schedule": 0.3}
    monkeypatch.setitem(app.conf, "beat_schedule", {"routing.learn_all": entry})
    worker.start_embedded_beat()
    try:
        deadline = time.monotonic() + 60
        while not cells(policy):
            assert time.monotonic() < deadline, "learn_all never ran"
            time.sleep(0.1)
    finally:
        worker.stop_embedded_beat()
        time.sleep(0.5)  # a learn_all already sent finishes before the test's tables are flushed
    assert cells(policy) == {(SCIENCE, B): (1, 1)}
