"""Judging rows: LLM judges through the engine's own /v1 path (an alias on the fake OpenAI
upstream with scripted replies), programmatic checks, overrides, and a run through a real worker."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from datasets import curation as C
from datasets import judge as J
from datasets.models import Dataset, JudgeRun, Verdict
from gateway.services import alias_set

pytestmark = pytest.mark.django_db(transaction=True)

LINES = [
    {"prompt": "Say something good", "response": "a good answer", "reference": "a good answer"},
    {"prompt": "Say something bad", "response": "a bad answer", "reference": "expected"},
    {"prompt": "Give JSON", "response": '{"city": "Paris", "n": 3}'},
    {"prompt": "Give more JSON", "response": '{"city": 7}'},
]


def _dataset(people: dict[str, Any], lines: list[dict[str, Any]] = LINES) -> Dataset:
    data = "\n".join(json.dumps(line) for line in lines).encode()
    return C.dataset_import_jsonl(project=people["project"], name="Judged", file=data, user=people["owner"])


def _answer_under_review(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"].rsplit("Answer to evaluate:\n", 1)[-1]


def _pointwise(body: dict[str, Any]) -> str:
    good = "good" in _answer_under_review(body)
    n = 9 if good else 3
    verdict = {"correctness": n, "helpfulness": str(n), "format": n, "reason": f"it is {'good' if good else 'poor'}"}
    return f"Sure! ```json\n{json.dumps(verdict)}\n```"  # chatter and a fence around it, a number as text


@pytest.fixture
def judge_alias(people: dict[str, Any], providers: dict[str, Any]) -> Any:
    alias_set(project=people["project"], name="judge", target="openai/scripted-judge", changed_by="test")
    fake = providers["openai"]
    fake.scripts.clear()
    return fake


def _run(people: dict[str, Any], dataset: Dataset, kind: str, **kw: Any) -> JudgeRun:
    run = J.judge_run_create(version=C.open_version(dataset=dataset), kind=kind, user=people["owner"], **kw)
    return J.judge_run_execute(run=run)


def test_pointwise_scores_each_row_and_a_rerun_skips_judged_rows(
    people: dict[str, Any], judge_alias: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)  # driven directly here; see the worker test
    calls: list[dict[str, Any]] = []

    def reply(body: dict[str, Any]) -> str:
        calls.append(body)
        return _pointwise(body)

    judge_alias.scripts["scripted-judge"] = [reply]
    dataset = _dataset(people, LINES[:2])
    run = _run(people, dataset, "pointwise")
    assert run.status == "done" and run.progress == 1.0 and run.judge == "judge"
    good, bad = (Verdict.objects.get(row__response=r) for r in ("a good answer", "a bad answer"))
    assert good.score == 9 and good.passed is True and good.scores == {"correctness": 9, "helpfulness": 9, "format": 9}
    assert good.reason == "it is good" and good.judge_version == run.judge_version and not good.error
    assert bad.score == 3 and bad.passed is False and bad.flagged
    assert "Correctness" in calls[0]["messages"][0]["content"] and "Say something" in calls[0]["messages"][1]["content"]
    assert J.judge_summary(run=run) == {"passed": 1, "flagged": 1, "unjudged": 0}
    # The same settings give the same judge version: a second run asks about nothing already judged.
    again = _run(people, dataset, "pointwise")
    assert again.judge_version == run.judge_version and len(calls) == 2
    # A person's edit is what gets judged; a different threshold is a new judge version.
    row = good.row
    C.row_edit_response(row=row, text="now worse", user=people["owner"], revision=row.revision)
    strict = _run(people, dataset, "pointwise", options={"threshold": 2})
    assert strict.judge_version != run.judge_version
    assert Verdict.objects.get(row=row, judge_version=strict.judge_version).passed is True  # 3 >= 2
    assert _answer_under_review(calls[-2]) in ("now worse", "a bad answer")


def test_garbage_is_retried_then_the_row_is_left_unjudged(
    people: dict[str, Any], judge_alias: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    calls: list[str] = []

    def reply(body: dict[str, Any]) -> str:
        answer = _answer_under_review(body)
        calls.append(answer)
        if "bad" in answer:
            return "I think it's fine, 8/10"  # never JSON
        if calls.count(answer) == 1:
            return '{"correctness": 11, "helpfulness": 5, "format": 5}'  # out of range: asked again
        return '{"correctness": 8, "helpfulness": 8, "format": 8, "reason": "ok"}'

    judge_alias.scripts["scripted-judge"] = [reply]
    run = _run(people, _dataset(people, LINES[:2]), "pointwise")
    assert run.status == "done" and "1 could not be judged" in run.message
    bad = Verdict.objects.get(row__response="a bad answer")
    assert bad.passed is None and bad.score is None and not bad.flagged
    assert "no JSON object" in bad.error and "after 2 attempts" in bad.error
    good = Verdict.objects.get(row__response="a good answer")
    assert good.score == 8 and good.passed is True and not good.error
    assert calls.count("a bad answer") == 2 and calls.count("a good answer") == 2
    assert J.judge_summary(run=run) == {"passed": 1, "flagged": 0, "unjudged": 1}


def test_a_failing_judge_alias_leaves_rows_unjudged(
    people: dict[str, Any], providers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    run = _run(people, _dataset(people, LINES[:1]), "pointwise", alias="no-such-judge")
    verdict = Verdict.objects.get()
    assert run.status == "done" and verdict.judge == "no-such-judge"
    assert verdict.error.startswith("judge call failed: ")


def test_pairwise_records_the_order_and_maps_the_winner_back(
    people: dict[str, Any], judge_alias: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    judge_alias.scripts["scripted-other"] = ["the other model's answer"]

    def prefer(body: dict[str, Any]) -> str:
        """Prefers the row's answer when it is the good one, else the other model's."""
        text = body["messages"][-1]["content"]
        a = re.search(r"Answer A:\n(.*)\n\nAnswer B:", text, re.S)
        assert a is not None
        row_is_a = a.group(1) != "the other model's answer"
        row_good = "a good answer" in text
        winner = "A" if row_is_a == row_good else "B"
        return json.dumps({"winner": winner, "reason": f"{winner} is better"})

    judge_alias.scripts["scripted-judge"] = [prefer]
    run = _run(people, _dataset(people, LINES[:2]), "pairwise", options={"model": "openai/scripted-other"})
    assert run.status == "done"
    good, bad = (Verdict.objects.get(row__response=r) for r in ("a good answer", "a bad answer"))
    for verdict in (good, bad):
        assert verdict.kind == "pairwise" and verdict.scores["order"] in ("AB", "BA")
        assert verdict.scores["other_model"] == "openai/scripted-other"
        assert verdict.scores["other_answer"] == "the other model's answer"
    assert good.scores["winner"] == "row" and good.passed is True and good.score == 10
    assert bad.scores["winner"] == "other" and bad.passed is False and bad.flagged
    # The position reported by the judge is kept too, and agrees with the order.
    assert (good.scores["winner_position"] == "A") == (good.scores["order"] == "AB")


def test_checks(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    dataset = _dataset(people)

    def verdicts(run: JudgeRun) -> dict[str, Any]:
        return {v.row.response: (v.passed, v.error or v.reason) for v in run.verdicts.select_related("row")}

    assert {k: v[0] for k, v in verdicts(_run(people, dataset, "json")).items()} == {
        "a good answer": False,
        "a bad answer": False,
        '{"city": "Paris", "n": 3}': True,
        '{"city": 7}': True,
    }
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    got = verdicts(_run(people, dataset, "json_schema", options={"schema": schema}))
    assert got['{"city": "Paris", "n": 3}'] == (True, "matches the schema")
    assert (
        got['{"city": 7}'][0] is False and "schema mismatch at city: 7 is not of type 'string'" in got['{"city": 7}'][1]
    )
    assert got["a good answer"][0] is False and got["a good answer"][1].startswith("not valid JSON")
    got = verdicts(_run(people, dataset, "regex", options={"pattern": r"^a \w+ answer$"}))
    assert sorted(k for k, v in got.items() if v[0]) == ["a bad answer", "a good answer"]
    got = verdicts(_run(people, dataset, "exact"))
    assert got["a good answer"] == (True, "equals the reference")
    assert got["a bad answer"] == (False, "differs from the reference")
    assert got['{"city": 7}'] == (None, "the row has no reference answer")


@pytest.mark.parametrize(
    ("kind", "options", "problem"),
    [
        ("pairwise", {}, "needs options.model"),
        ("json_schema", {"schema": {"type": "nonsense"}}, "not a valid JSON schema"),
        ("json_schema", {}, "options.schema must be"),
        ("regex", {"pattern": "("}, "not a valid regular expression"),
        ("regex", {}, "options.pattern is required"),
        ("pointwise", {"threshold": "high"}, "threshold must be a number"),
        ("vibes", {}, "kind: use one of"),
    ],
)
def test_bad_options_are_refused_before_a_run(
    people: dict[str, Any], kind: str, options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(C.CurationError, match=problem):
        J.judge_run_create(version=C.open_version(dataset=_dataset(people, LINES[:1])), kind=kind, options=options)
    assert not JudgeRun.objects.exists()


def test_override_is_kept_beside_the_verdict(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    dataset = _dataset(people)
    run = _run(people, dataset, "exact")
    verdict = run.verdicts.get(row__response="a bad answer")
    assert verdict.flagged
    C.verdict_override(verdict=verdict, passed=True, reason="close enough", user=people["member"])
    verdict.refresh_from_db()
    assert verdict.passed is False and verdict.override_passed is True and not verdict.flagged
    assert verdict.overridden_by == people["member"] and verdict.override_reason == "close enough"
    assert not C.rows_filtered(version=C.open_version(dataset=dataset), filter=C.RowFilter(flagged=True)).exists()
    C.verdict_override(verdict=verdict, passed=None, user=people["member"])
    verdict.refresh_from_db()
    assert verdict.override_passed is None and verdict.flagged and verdict.overridden_by is None


def test_a_judge_run_goes_through_the_worker(server_url: str, people: dict[str, Any], judge_alias: Any) -> None:
    """Enqueued on commit, run by the embedded Celery worker, verdicts through the live engine."""
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()
    judge_alias.scripts["scripted-judge"] = [_pointwise]
    dataset = _dataset(people, LINES[:2])
    run = J.judge_run_create(version=C.open_version(dataset=dataset), kind="pointwise", user=people["owner"])
    deadline = time.monotonic() + 30
    while run.status in ("queued", "running"):
        assert time.monotonic() < deadline, f"judge run stuck at {run.status} {run.progress}"
        time.sleep(0.1)
        run.refresh_from_db()
    assert run.status == "done", run.message
    assert sorted(bool(p) for p in run.verdicts.values_list("passed", flat=True)) == [False, True]
    assert run.finished_at is not None


def test_cancel(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    monkeypatch.setattr(J, "PROGRESS_EVERY", 1)
    dataset = _dataset(people)
    queued = J.judge_run_create(version=C.open_version(dataset=dataset), kind="json")
    assert J.judge_run_cancel(run=queued).status == "cancelled"
    assert J.judge_run_execute(run=queued).status == "cancelled" and not queued.verdicts.exists()  # never runs
    running = J.judge_run_create(version=C.open_version(dataset=dataset), kind="json")
    real_check = J.check

    def check_then_cancel(kind: str, options: dict[str, Any], row: Any) -> J.Outcome:
        J.JudgeRun.objects.filter(pk=running.pk).update(cancel_requested=True)  # someone presses cancel
        return real_check(kind, options, row)

    monkeypatch.setattr(J, "check", check_then_cancel)
    running = J.judge_run_execute(run=running)
    assert running.status == "cancelled" and running.message == "Cancelled after 1 of 4 rows."
    assert running.verdicts.count() == 1
