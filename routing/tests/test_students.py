"""A distilled student joins the routing policies that route to its teacher when a person approves
it (distillation.services.job_approve → routing.learning.student_approved → the student_join task on
the embedded worker), with its held-out evaluation as its STUDENT_EVAL cells. The job is built
through the ORM (no training), as distillation's own approval tests do."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from datasets import curation as C
from distillation import services as S
from distillation.models import DistillationJob, Student
from gateway.services import alias_set
from routing import learning, prior
from routing.models import ProfileCell, RoutingPolicy

pytestmark = pytest.mark.django_db(transaction=True)

TEACHER, OTHER = "openai/scripted-teacher", "openai/gpt-4o"
EXAMPLES = {c.key: c.examples for c in prior.clusters()}
CODE, SCIENCE = "prior:code", "prior:expert-science"


def done_job(people: dict[str, Any], tmp_path: Path) -> DistillationJob:
    """A finished job whose evaluation shows four held-out rows: two scored by the judge, two the
    judge could not score (then exact agreement with the teacher decides)."""
    prompts = [EXAMPLES[CODE][0], EXAMPLES[CODE][1], EXAMPLES[SCIENCE][0], EXAMPLES[SCIENCE][1]]
    data = "\n".join(json.dumps({"prompt": p, "response": "x"}) for p in prompts).encode()
    dataset = C.dataset_import_jsonl(project=people["project"], name="Held out", file=data, user=people["owner"])
    rows = list(C.open_version(dataset=dataset).rows.order_by("pk"))
    evaluated = [
        {"row": rows[0].pk, "answers": {"teacher": "a", "student": "b"}, "scores": {"teacher": 9, "student": 8}},
        {"row": rows[1].pk, "answers": {"teacher": "a", "student": "a"}, "scores": {"teacher": 9, "student": 6.5}},
        {"row": rows[2].pk, "answers": {"teacher": "Yes.", "student": " yes"}, "scores": {"teacher": None}},
        {"row": rows[3].pk, "answers": {"teacher": "42", "student": "41"}, "scores": {"student": None}},
    ]
    return DistillationJob.objects.create(
        project=people["project"],
        dataset_version=rows[0].version,
        teacher="teacher",
        student="smollm2-135m-instruct",
        judge_kind="pointwise",
        judge_alias="judge",
        judge_options={"threshold": 7},
        status=DistillationJob.Status.DONE,
        adapter_path=str(tmp_path),
        split={"train": [], "held_out": [r.pk for r in rows]},
        evaluation={"held_out": 4, "rows": evaluated},
    )


def student_cells(policy: RoutingPolicy, model: str) -> dict[str, tuple[float, int]]:
    found = ProfileCell.objects.filter(policy=policy, model=model, source=ProfileCell.Source.STUDENT_EVAL)
    return {c.cluster_key: (c.errors, c.samples) for c in found}


def test_an_approved_student_joins_the_policies_of_its_teacher(people: dict[str, Any], tmp_path: Path) -> None:
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()
    project = people["project"]
    alias_set(project=project, name="teacher", target=TEACHER, changed_by="test")
    joins = RoutingPolicy.objects.create(project=project, name="support", candidates=[TEACHER, OTHER])
    elsewhere = RoutingPolicy.objects.create(project=project, name="coding", candidates=[OTHER])
    outsider = RoutingPolicy.objects.create(project=people["other_project"], name="support", candidates=[TEACHER])

    student = S.job_approve(job=done_job(people, tmp_path), alias="support-bot", user=people["owner"])
    model = f"local/{student.name}"
    deadline = time.monotonic() + 60
    while model not in joins.candidates:
        assert time.monotonic() < deadline, "the student never joined the policy"
        time.sleep(0.1)
        joins.refresh_from_db()
    time.sleep(0.2)  # the task's transaction has committed the candidate and its cells together
    assert joins.candidates == [TEACHER, OTHER, model]
    # code: 8 passes, 6.5 is under the job judge's threshold of 7; science (unscored): "Yes." and
    # " yes" agree after normalising, "41" is not "42".
    assert student_cells(joins, model) == {CODE: (1, 2), SCIENCE: (1, 2)}
    for policy in (elsewhere, outsider):
        policy.refresh_from_db()
        assert model not in policy.candidates and not student_cells(policy, model)

    # Joining again (a redelivered task) changes nothing.
    assert learning.student_join(student=student) == [joins.pk]
    joins.refresh_from_db()
    assert joins.candidates == [TEACHER, OTHER, model]
    assert student_cells(joins, model) == {CODE: (1, 2), SCIENCE: (1, 2)}

    # Rolling the approval back takes the student out of the policy again, cells and all.
    assert S.job_rollback(job=student.job, user=people["owner"]) == ""  # the alias the approval made goes
    joins.refresh_from_db()
    assert joins.candidates == [TEACHER, OTHER] and not student_cells(joins, model)


def test_a_student_replacing_its_teachers_own_alias_still_finds_its_policies(
    people: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approved onto the teacher's alias: the alias now names the student, and the target the
    approval replaced says who the teacher was."""
    monkeypatch.setattr(learning, "student_approved", lambda student: None)  # joined directly below
    project = people["project"]
    alias_set(project=project, name="teacher", target=TEACHER, changed_by="test")
    policy = RoutingPolicy.objects.create(project=project, name="support", candidates=["scripted-nothing", TEACHER])
    student = S.job_approve(job=done_job(people, tmp_path), alias="teacher", user=people["owner"])
    assert Student.objects.get(pk=student.pk).replaced_target == TEACHER
    assert learning.student_join(student=student) == [policy.pk]
    policy.refresh_from_db()
    assert policy.candidates[-1] == f"local/{student.name}"
    assert sum(samples for _e, samples in student_cells(policy, policy.candidates[-1]).values()) == 4
