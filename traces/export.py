"""Trace export formats, each a generator of bytes over `selectors.trace_iter`, so a response streams
page by page and never holds the whole result in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from asgiref.sync import sync_to_async

FORMATS = {
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "parquet": ("application/vnd.apache.parquet", "parquet"),
    "openai": ("application/x-ndjson", "jsonl"),  # OpenAI fine-tuning: {"messages": [...]} per line
}
# Columns of the flat formats (CSV, Parquet): everything but the nested ones, which go as JSON text.
FLAT = [
    "trace_id",
    "timestamp",
    "endpoint",
    "requested_model",
    "alias",
    "resolved_model",
    "provider",
    "status",
    "error_class",
    "finish_reason",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_total_usd",
    "latency_ms",
    "ttft_ms",
    "retries",
    "fallbacks",
    "user",
    "api_key_id",
]
NESTED = ["request_messages", "request_params", "response_message", "metadata", "tags", "attempts", "feedback"]
ROW_GROUP = 2000  # Parquet rows per group: one export page, so memory stays one page


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _flat(trace: dict[str, Any]) -> dict[str, Any]:
    out = {c: trace.get(c) for c in FLAT}
    out.update({c: _text(trace[c]) if trace.get(c) not in (None, "") else "" for c in NESTED})
    return out


def jsonl(traces: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for trace in traces:
        yield orjson.dumps(trace) + b"\n"


def openai_finetune(traces: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Successful chat traces as OpenAI's chat fine-tuning lines: the request's messages followed by
    the answer. Failed calls and calls without a usable answer are left out (nothing to learn)."""
    for trace in traces:
        answer, messages = trace.get("response_message"), trace.get("request_messages")
        if trace.get("status") != 200 or not isinstance(answer, dict) or not isinstance(messages, list):
            continue
        if trace.get("endpoint") == "embeddings":
            continue
        reply = {k: v for k, v in answer.items() if k in ("role", "content", "tool_calls") and v is not None}
        yield orjson.dumps({"messages": [*messages, {**reply, "role": "assistant"}]}) + b"\n"


def csv_rows(traces: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FLAT + NESTED, extrasaction="ignore")
    writer.writeheader()
    for i, trace in enumerate(traces, 1):
        writer.writerow(_flat(trace))
        if i % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("timestamp", pa.string()),
        *[(c, pa.string()) for c in ("endpoint", "requested_model", "alias", "resolved_model", "provider")],
        ("status", pa.uint16()),
        ("error_class", pa.string()),
        ("finish_reason", pa.string()),
        ("stream", pa.bool_()),
        *[(c, pa.uint32()) for c in ("prompt_tokens", "completion_tokens", "cached_tokens")],
        ("cost_total_usd", pa.float64()),
        ("latency_ms", pa.float32()),
        ("ttft_ms", pa.float32()),
        ("retries", pa.uint16()),
        ("fallbacks", pa.uint16()),
        ("user", pa.string()),
        ("api_key_id", pa.uint64()),
        *[(c, pa.string()) for c in NESTED],
    ]
)


class _Chunks(io.RawIOBase):
    """A write-only file that hands back what was written since the last take()."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.size

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def parquet(traces: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    sink = _Chunks()
    writer = pq.ParquetWriter(sink, SCHEMA, compression="zstd")
    batch: list[dict[str, Any]] = []
    for trace in traces:
        batch.append(_flat(trace))
        if len(batch) == ROW_GROUP:
            writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
            batch = []
            yield sink.take()
    if batch:
        writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
    writer.close()
    yield sink.take()


WRITERS = {"jsonl": jsonl, "csv": csv_rows, "parquet": parquet, "openai": openai_finetune}
CHUNK = 1 << 16


def _joined(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Pieces regrouped into ~64 KiB chunks: one thread hop per chunk, not per trace."""
    buffer: list[bytes] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


async def stream(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The export as an async iterator: under ASGI, Django would read a sync one to the end into
    memory before sending a byte, so the queries run in a worker thread a chunk at a time instead."""
    chunks = _joined(pieces)

    def take() -> bytes | None:
        return next(chunks, None)

    while (chunk := await sync_to_async(take, thread_sensitive=False)()) is not None:
        yield chunk
