"""Curation services on real components: traces in chDB through the trace writer, cluster
membership from the assignments table, rows in the Django DB."""

from __future__ import annotations

import json
from typing import Any

import pytest

from datasets import curation as C
from datasets.models import Dataset, DatasetRow, RowEdit, Verdict
from datasets.tests.dataset_support import cluster_of

pytestmark = pytest.mark.django_db(transaction=True)


def _items(n: int, model: str = "openai/gpt-4o-mini", word: str = "invoice") -> list[dict[str, Any]]:
    return [{"prompt": f"{word} question {i}", "answer": f"{word} answer {i}", "model": model} for i in range(n)]


@pytest.fixture
def dataset(people: dict[str, Any]) -> Dataset:
    project = people["project"]
    a = cluster_of(project, _items(3, "openai/gpt-4o-mini"), name="Invoices")
    b = cluster_of(project, _items(2, "anthropic/claude-haiku-4-5", "refund"), name="Refunds")
    return C.dataset_create_from_clusters(project=project, name="Billing", clusters=[a, b], user=people["owner"])


def test_create_from_clusters_takes_every_successful_member_trace(people: dict[str, Any]) -> None:
    project = people["project"]
    items = [*_items(3), {"prompt": "broken", "answer": "", "status": 500}]
    cluster = cluster_of(project, items, name="Invoices")
    other = cluster_of(project, _items(2, "openai/gpt-4o", "refund"), name="Refunds")
    dataset = C.dataset_create_from_clusters(
        project=project, name=" Billing ", clusters=[cluster, other.pk], user=people["owner"]
    )
    assert dataset.name == "Billing" and dataset.created_by == people["owner"]
    assert set(dataset.clusters.all()) == {cluster, other}
    version = C.open_version(dataset=dataset)
    assert version.number == 1 and not version.frozen
    rows = list(version.rows.order_by("response"))
    assert len(rows) == 5  # the failed trace has no answer to learn from
    first = rows[0]
    assert first.messages == [{"role": "user", "content": "invoice question 0"}]
    assert first.response == "invoice answer 0" and first.target == "invoice answer 0"
    assert first.model == "openai/gpt-4o-mini" and first.cost_usd == pytest.approx(0.001)
    assert first.cluster == cluster and first.trace_id is not None and first.status == "pending"
    assert C.version_counts(version=version) == {"pending": 5, "keep": 0, "drop": 0, "total": 5}


def test_create_refuses_another_projects_clusters(people: dict[str, Any]) -> None:
    theirs = cluster_of(people["other_project"], _items(1))
    with pytest.raises(C.CurationError, match=f"No such cluster in this project: {theirs.pk}"):
        C.dataset_create_from_clusters(project=people["project"], name="x", clusters=[theirs.pk])
    with pytest.raises(C.CurationError, match="at least one cluster"):
        C.dataset_create_from_clusters(project=people["project"], name="x", clusters=[])
    assert not Dataset.objects.exists()


GOOD = "\n".join(
    json.dumps(line)
    for line in [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        },
        {"prompt": "Capital of France?", "response": "Paris", "reference": "Paris", "metadata": {"src": "quiz"}},
        {"messages": [{"role": "user", "content": "hi"}], "response": "hello", "model": "openai/gpt-4o"},
    ]
)


def test_import_accepts_openai_and_plain_lines(people: dict[str, Any]) -> None:
    dataset = C.dataset_import_jsonl(
        project=people["project"], name="Quiz", file=(GOOD + "\n\n").encode(), user=people["member"]
    )
    rows = list(C.open_version(dataset=dataset).rows.order_by("id"))
    assert [r.response for r in rows] == ["4", "Paris", "hello"]
    assert rows[0].messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert rows[1].messages == [{"role": "user", "content": "Capital of France?"}]
    assert rows[1].reference == "Paris" and rows[1].metadata == {"src": "quiz"}
    assert rows[2].model == "openai/gpt-4o" and rows[0].trace_id is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "line 3: not valid JSON"),
        ('{"prompt": "q"}', "line 3: give 'messages' (OpenAI fine-tuning)"),
        ('{"prompt": "q", "response": 5}', "line 3: 'response' must be a string"),
        ('{"messages": [{"role": "user", "content": "q"}]}', "line 3: the last message must be the assistant's answer"),
        (
            '{"messages": [{"role": "wizard", "content": "q"}], "response": "a"}',
            "line 3: messages[0].role must be one of",
        ),
        ('{"prompt": "q", "response": "a", "metadata": []}', "line 3: 'metadata' must be an object"),
        ("[1, 2]", "line 3: must be a JSON object"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_imported(people: dict[str, Any], line: str, problem: str) -> None:
    data = '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n' + line + "\n"
    with pytest.raises(C.ImportFormatError) as err:
        C.dataset_import_jsonl(project=people["project"], name="Bad", file=data.encode())
    assert str(err.value).startswith(problem)
    assert err.value.errors[0][0] == 3
    assert not Dataset.objects.exists() and not DatasetRow.objects.exists()


def test_import_limits(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "MAX_IMPORT_BYTES", 100)
    with pytest.raises(C.CurationError, match="over the import limit"):
        C.dataset_import_jsonl(project=people["project"], name="Big", file=GOOD.encode())
    with pytest.raises(C.CurationError, match="no rows"):
        C.dataset_import_jsonl(project=people["project"], name="Empty", file=b"\n  \n")


def test_keep_drop_and_edit_keep_the_original_and_audit(dataset: Dataset, people: dict[str, Any]) -> None:
    row = C.open_version(dataset=dataset).rows.order_by("id").first()
    assert row is not None
    row = C.row_set_status(row=row, status="keep", user=people["owner"])
    assert row.status == "keep" and row.revision == 1 and row.updated_by == people["owner"]
    row = C.row_edit_response(row=row, text="A better answer.", user=people["owner"], revision=1)
    assert row.edited_response == "A better answer." and row.response.startswith("invoice answer")
    assert row.target == "A better answer." and row.revision == 2
    edits = list(row.edits.order_by("id").values_list("field", "old", "new"))
    assert edits == [("status", "pending", "keep"), ("edited_response", "", "A better answer.")]
    with pytest.raises(C.CurationError, match="Status must be one of"):
        C.row_set_status(row=row, status="maybe")


def test_two_people_editing_one_row_the_stale_one_is_told_who(dataset: Dataset, people: dict[str, Any]) -> None:
    row = C.open_version(dataset=dataset).rows.order_by("id").first()
    assert row is not None
    seen = row.revision  # both open the row at the same revision
    C.row_edit_response(row=row, text="Owner's fix", user=people["owner"], revision=seen)
    with pytest.raises(C.EditConflict) as err:
        C.row_edit_response(row=row, text="Member's fix", user=people["member"], revision=seen)
    assert err.value.changed_by == "owner@example.com"
    assert "changed by owner@example.com" in str(err.value)
    row.refresh_from_db()
    assert row.edited_response == "Owner's fix" and row.revision == seen + 1
    assert RowEdit.objects.filter(row=row).count() == 1
    # With the fresh revision the member's edit goes through, and both are audited.
    C.row_edit_response(row=row, text="Member's fix", user=people["member"], revision=row.revision)
    assert list(RowEdit.objects.filter(row=row).order_by("id").values_list("user__username", "new")) == [
        ("owner@example.com", "Owner's fix"),
        ("member@example.com", "Member's fix"),
    ]


def test_freeze_copies_rows_and_verdicts_and_the_frozen_version_refuses_edits(
    dataset: Dataset, people: dict[str, Any]
) -> None:
    v1 = C.open_version(dataset=dataset)
    row = v1.rows.order_by("id").first()
    assert row is not None
    C.row_set_status(row=row, status="keep", user=people["owner"])
    row = C.row_edit_response(row=row, text="fixed", user=people["owner"], revision=1)
    Verdict.objects.create(row=row, judge="judge", judge_version="h1", kind="pointwise", score=3, passed=False)
    v2 = C.version_freeze(version=v1, user=people["owner"], note="first cut")
    v1.refresh_from_db()
    assert v1.frozen and v1.note == "first cut" and v1.frozen_by == people["owner"]
    assert v2.number == 2 and not v2.frozen and C.open_version(dataset=dataset) == v2
    assert v2.rows.count() == v1.rows.count() == 5
    copy = v2.rows.get(trace_id=row.trace_id)
    assert (copy.status, copy.edited_response, copy.response) == ("keep", "fixed", row.response)
    assert copy.verdicts.get().flagged
    with pytest.raises(C.VersionFrozen, match="Version 1 is frozen"):
        C.row_edit_response(row=row, text="late", user=people["member"], revision=row.revision)
    with pytest.raises(C.VersionFrozen):
        C.row_set_status(row=row, status="drop")
    with pytest.raises(C.VersionFrozen):
        C.rows_bulk_status(version=v1, filter=C.RowFilter(), status="drop")
    with pytest.raises(C.VersionFrozen):
        C.version_freeze(version=v1)
    with pytest.raises(C.VersionFrozen):
        C.verdict_override(verdict=row.verdicts.get(), passed=True)
    row.refresh_from_db()
    assert row.edited_response == "fixed"
    copy = C.row_edit_response(row=copy, text="v2 fix", revision=copy.revision, user=people["member"])
    assert copy.edited_response == "v2 fix"


def test_bulk_status_on_a_filter(dataset: Dataset, people: dict[str, Any]) -> None:
    version = C.open_version(dataset=dataset)
    n = C.rows_bulk_status(
        version=version, filter=C.RowFilter(model="anthropic/claude-haiku-4-5"), status="keep", user=people["member"]
    )
    assert n == 2
    assert set(version.rows.filter(status="keep").values_list("model", flat=True)) == {"anthropic/claude-haiku-4-5"}
    # The judge flagged one row, then a person overrode a failure on another: only the first is flagged.
    rows = list(version.rows.filter(model="openai/gpt-4o-mini").order_by("id"))
    Verdict.objects.create(row=rows[0], judge="judge", judge_version="h", kind="pointwise", passed=False)
    Verdict.objects.create(
        row=rows[1], judge="judge", judge_version="h", kind="pointwise", passed=False, override_passed=True
    )
    Verdict.objects.create(
        row=rows[2], judge="judge", judge_version="h", kind="pointwise", passed=None, error="garbage"
    )
    flagged = C.RowFilter.from_query({"flagged": "true"})
    assert list(C.rows_filtered(version=version, filter=flagged)) == [rows[0]]
    assert C.rows_bulk_status(version=version, filter=flagged, status="drop", user=people["owner"]) == 1
    assert C.version_counts(version=version) == {"keep": 2, "drop": 1, "pending": 2, "total": 5}
    assert RowEdit.objects.filter(row=rows[0], field="status", new="drop", user=people["owner"]).exists()
    assert C.rows_bulk_status(version=version, filter=flagged, status="drop") == 0  # already dropped
    # Text search, cluster and status filters.
    assert C.rows_filtered(version=version, filter=C.RowFilter(q="REFUND question")).count() == 2
    refunds = dataset.clusters.get(name="Refunds")
    assert C.rows_filtered(version=version, filter=C.RowFilter(cluster=refunds.pk, status="keep")).count() == 2
    with pytest.raises(C.CurationError, match="flagged"):
        C.RowFilter.from_query({"flagged": "perhaps"})
