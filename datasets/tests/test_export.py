"""Dataset export over the live server (streamed): OpenAI fine-tuning JSONL with the edited target,
plain JSONL with verdicts, Parquet read back with pyarrow; kept rows by default, `status=all` for
every row not dropped, `version=N` for a frozen version."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from datasets import curation as C
from datasets import export as E
from datasets.models import Dataset, Verdict

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dataset(people: dict[str, Any]) -> Dataset:
    """Four rows: kept and edited, kept, pending, dropped."""
    lines = [
        {
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            "response": "four",
        },
        {"prompt": "Capital of France?", "response": "Paris", "reference": "Paris", "metadata": {"src": "quiz"}},
        {"prompt": "pending one", "response": "maybe"},
        {"prompt": "dropped one", "response": "wrong"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    dataset = C.dataset_import_jsonl(project=people["project"], name="Quiz", file=data, user=people["owner"])
    rows = list(C.open_version(dataset=dataset).rows.order_by("id"))
    C.row_set_status(row=rows[0], status="keep", user=people["owner"])
    C.row_edit_response(row=rows[0], text="4", user=people["owner"], revision=1)
    C.row_set_status(row=rows[1], status="keep", user=people["owner"])
    C.row_set_status(row=rows[3], status="drop", user=people["owner"])
    Verdict.objects.create(row=rows[1], judge="exact", kind="exact", passed=True, reason="equals the reference")
    return dataset


@pytest.fixture
def api(server_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def test_openai_export_is_the_kept_rows_with_the_edited_target(api: httpx.Client, dataset: Dataset) -> None:
    with api.stream("GET", f"/api/datasets/{dataset.pk}/export", params={"format": "openai"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        assert 'filename="dataset-' in r.headers["content-disposition"]
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines == [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        },
        {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]},
    ]
    everything = api.get(f"/api/datasets/{dataset.pk}/export", params={"format": "openai", "status": "all"}).text
    assert [json.loads(x)["messages"][-1]["content"] for x in everything.splitlines()] == ["4", "Paris", "maybe"]


def test_jsonl_export_has_both_answers_verdicts_and_status(api: httpx.Client, dataset: Dataset) -> None:
    text = api.get(f"/api/datasets/{dataset.pk}/export", params={"format": "jsonl"}).text
    first, second = (json.loads(line) for line in text.splitlines())
    assert (first["response"], first["edited_response"], first["target"], first["status"]) == ("four", "4", "4", "keep")
    assert second["reference"] == "Paris" and second["metadata"] == {"src": "quiz"}
    assert second["verdicts"][0] | {"judge": "exact", "passed": True, "flagged": False} == second["verdicts"][0]
    assert second["messages"] == [{"role": "user", "content": "Capital of France?"}]


def test_parquet_export_reads_back(api: httpx.Client, dataset: Dataset) -> None:
    r = api.get(f"/api/datasets/{dataset.pk}/export", params={"format": "parquet", "status": "all"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content)).to_pylist()
    assert [row["status"] for row in table] == ["keep", "keep", "pending"]
    assert table[0]["target"] == "4" and table[0]["response"] == "four" and table[0]["edited_response"] == "4"
    assert json.loads(table[0]["messages"])[1] == {"role": "user", "content": "2+2?"}
    assert json.loads(table[1]["verdicts"])[0]["reason"] == "equals the reference"


def test_a_frozen_version_exports_as_frozen_and_bad_params_are_400(
    api: httpx.Client, dataset: Dataset, people: dict[str, Any]
) -> None:
    v1 = C.open_version(dataset=dataset)
    v2 = C.version_freeze(version=v1, user=people["owner"])
    row = v2.rows.get(response="Paris")
    C.row_set_status(row=row, status="drop", user=people["member"])

    def targets(**params: Any) -> list[str]:
        text = api.get(f"/api/datasets/{dataset.pk}/export", params={"format": "openai", **params}).text
        return [json.loads(x)["messages"][-1]["content"] for x in text.splitlines()]

    assert targets() == ["4"]  # the open version, v2
    assert targets(version=1) == ["4", "Paris"]  # the frozen one never changes
    assert api.get(f"/api/datasets/{dataset.pk}/export", params={"format": "xml"}).status_code == 400
    assert api.get(f"/api/datasets/{dataset.pk}/export", params={"status": "some"}).status_code == 400
    assert api.get(f"/api/datasets/{dataset.pk}/export", params={"version": 7}).status_code == 404


def test_export_reads_rows_a_page_at_a_time(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(E, "PAGE", 1)
    rows = list(E.export_rows(version=C.open_version(dataset=dataset), status="all"))
    assert [r.response for r in rows] == ["four", "Paris", "maybe"]
    assert b"".join(E.openai_finetune(iter(rows))).count(b"\n") == 3
