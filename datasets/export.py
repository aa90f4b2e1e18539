"""Dataset version export: OpenAI fine-tuning JSONL, plain JSONL and Parquet, each a generator of
bytes over the rows read a page at a time (traces/export.py's streaming helpers do the rest), so a
large version streams and never sits in memory whole.

Which rows: kept rows by default (`status=keep`), the ones a person approved for training;
`status=all` gives every row that is not dropped (kept and pending); `status=pending`/`drop` one
status. The training target is a person's edit when there is one, else the model's answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from traces.export import ROW_GROUP, _Chunks

from .models import DatasetRow, DatasetVersion

FORMATS = {
    "openai": ("application/x-ndjson", "jsonl"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "parquet": ("application/vnd.apache.parquet", "parquet"),
}
STATUSES = ("keep", "all", "pending", "drop")
PAGE = 1000


def export_rows(*, version: DatasetVersion, status: str = "keep") -> Iterator[DatasetRow]:
    """The version's rows to export, in id order, a page at a time with their verdicts."""
    everything = version.rows.all()
    rows = everything.exclude(status=DatasetRow.Status.DROP) if status == "all" else everything.filter(status=status)
    after = 0
    while True:
        page = list(rows.filter(pk__gt=after).order_by("pk").prefetch_related("verdicts")[:PAGE])
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].pk


def _verdicts(row: DatasetRow) -> list[dict[str, Any]]:
    return [
        {
            "judge": v.judge,
            "judge_version": v.judge_version,
            "kind": v.kind,
            "score": v.score,
            "scores": v.scores,
            "passed": v.passed,
            "reason": v.reason,
            "error": v.error,
            "override_passed": v.override_passed,
            "override_reason": v.override_reason,
            "flagged": v.flagged,
        }
        for v in row.verdicts.all()
    ]


def row_record(row: DatasetRow) -> dict[str, Any]:
    return {
        "id": row.pk,
        "trace_id": str(row.trace_id) if row.trace_id else None,
        "cluster_id": row.cluster_id,
        "messages": row.messages,
        "response": row.response,
        "edited_response": row.edited_response,
        "target": row.target,
        "reference": row.reference,
        "model": row.model,
        "cost_usd": row.cost_usd,
        "status": row.status,
        "metadata": row.metadata,
        "verdicts": _verdicts(row),
    }


def openai_finetune(rows: Iterator[DatasetRow]) -> Iterator[bytes]:
    """OpenAI chat fine-tuning lines: the prompt's messages, then the target as the assistant's."""
    for row in rows:
        yield orjson.dumps({"messages": [*row.messages, {"role": "assistant", "content": row.target}]}) + b"\n"


def jsonl(rows: Iterator[DatasetRow]) -> Iterator[bytes]:
    for row in rows:
        yield orjson.dumps(row_record(row)) + b"\n"


SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("trace_id", pa.string()),
        ("cluster_id", pa.int64()),
        ("messages", pa.string()),  # JSON text, as the traces export writes nested values
        ("response", pa.string()),
        ("edited_response", pa.string()),
        ("target", pa.string()),
        ("reference", pa.string()),
        ("model", pa.string()),
        ("cost_usd", pa.float64()),
        ("status", pa.string()),
        ("metadata", pa.string()),
        ("verdicts", pa.string()),
    ]
)
_NESTED = ("messages", "metadata", "verdicts")


def parquet(rows: Iterator[DatasetRow]) -> Iterator[bytes]:
    sink = _Chunks()
    writer = pq.ParquetWriter(sink, SCHEMA, compression="zstd")
    batch: list[dict[str, Any]] = []
    for row in rows:
        record = row_record(row)
        record.update({k: orjson.dumps(record[k]).decode() for k in _NESTED})
        batch.append(record)
        if len(batch) == ROW_GROUP:
            writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
            batch = []
            yield sink.take()
    if batch:
        writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
    writer.close()
    yield sink.take()


WRITERS = {"openai": openai_finetune, "jsonl": jsonl, "parquet": parquet}
