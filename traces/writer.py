"""The trace writer: a bounded in-memory queue drained by one thread that inserts batches into
ClickHouse, flushing by size or interval. Requests only enqueue; they never wait on ClickHouse.

Nothing is dropped silently: when ClickHouse fails, the batch is appended to a spool file under
var/spool/ (fsynced) and replayed once ClickHouse answers again; when the queue is full, the
record is spooled straight away and counted. The only loss window is a process or OS crash with
records still in memory (at most one flush interval, OPENTRACY_TRACE_FLUSH_INTERVAL_S).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gateway import limits, metrics
from opentracy_site import clickhouse

from . import live, otel
from .ch_sql import TRACE_COLUMNS, TRACES_TABLE
from .cost import UNKNOWN, compute_cost

log = logging.getLogger(__name__)
Record = dict[str, Any]


def to_row(record: Record) -> list[Any]:
    """A record (JSON-able dict) as a row in TRACE_COLUMNS order, with its cost."""
    r = {**TRACE_COLUMNS, **record}
    r["trace_id"] = uuid.UUID(str(r["trace_id"]))
    r["timestamp"] = datetime.fromtimestamp(float(r["timestamp"]), tz=UTC)
    if r["cost_total_usd"] is None and r["status"] == 200:
        try:
            cost = compute_cost(
                project_id=r["project_id"],
                provider=r["provider"],
                model=r["resolved_model"].split("/", 1)[-1],
                prompt=r["prompt_tokens"],
                completion=r["completion_tokens"],
                cached=r["cached_tokens"],
            )
        except Exception:  # a price lookup must never lose the trace
            log.exception("cost computation failed for trace %s", r["trace_id"])
            cost = UNKNOWN
        r["cost_input_usd"], r["cost_output_usd"], r["cost_total_usd"] = cost
    return [r[c] for c in TRACE_COLUMNS]


_COST = list(TRACE_COLUMNS).index("cost_total_usd")


def _account(batch: list[Record], rows: list[list[Any]]) -> None:
    """Spend per project (budgets) and per model (/metrics), once per trace as it is priced."""
    spend: dict[tuple[int, float], float] = {}
    for record, row in zip(batch, rows, strict=True):
        usd = row[_COST]
        if usd and record.get("endpoint") != "ingest":  # imported logs are not spend through the engine
            metrics.cost(record.get("provider", ""), record.get("resolved_model", ""), usd)
            key = (int(record.get("project_id", 0)), float(record["timestamp"]))
            spend[key] = spend.get(key, 0.0) + usd
    if spend:
        try:
            limits.add_spend(spend)
        except Exception:  # budgets must never cost a trace
            log.exception("could not add spend to the budget counters")


class TraceWriter:
    def __init__(
        self,
        *,
        batch_size: int,
        interval_s: float,
        queue_size: int,
        spool_dir: Path,
        replay_interval_s: float,
    ) -> None:
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.replay_interval_s = replay_interval_s
        self.spool_dir = spool_dir
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=queue_size)
        self._spool_lock = threading.Lock()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"submitted": 0, "written": 0, "spilled": 0, "replayed": 0, "queue_full": 0, "write_errors": 0}

    # -- request side ---------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        self.stats["submitted"] += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.stats["queue_full"] += 1
            log.warning("trace queue full (%d): spooling to disk", self._queue.maxsize)
            self._spill([record])

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued (or spool it) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        otel.shutdown()  # send the spans of what was just written

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def flush(self) -> None:
        """Block until everything submitted so far is written or spooled."""
        self._queue.join()

    def pending_spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("traces-*.jsonl"))

    # -- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        next_replay = 0.0
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._collect()
            if batch:
                self._write(batch)
                for _ in batch:
                    self._queue.task_done()
            if time.monotonic() >= next_replay:
                self.replay()
                next_replay = time.monotonic() + self.replay_interval_s

    def _collect(self) -> list[Record]:
        """Waits for a first record, then gathers more until the batch is full or the interval
        ends (at once when stopping)."""
        try:
            first = self._queue.get(timeout=min(self.interval_s, self.replay_interval_s))
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.interval_s
        while len(batch) < self.batch_size:
            remaining = 0.0 if self._stop.is_set() else deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0.0)))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[Record]) -> None:
        try:
            rows = [to_row(r) for r in batch]
            _account(batch, rows)
            clickhouse.insert(TRACES_TABLE, rows, list(TRACE_COLUMNS))
            self.stats["written"] += len(batch)
        except Exception as exc:
            self.stats["write_errors"] += 1
            log.warning("ClickHouse insert failed (%s): spooling %d traces", type(exc).__name__, len(batch))
            self._spill(batch)
            return
        otel.export(rows)  # only once stored: a spooled batch is exported when it is replayed
        live.publish(batch, rows)  # the live tail (traces/live.py); never raises, never waits

    def _spill(self, records: list[Record]) -> None:
        with self._spool_lock:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            path = self.spool_dir / f"traces-{time.time_ns()}-{next(self._seq)}.jsonl"
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                for r in records:
                    f.write(orjson.dumps(r) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(path)  # replay only ever sees whole files
            self.stats["spilled"] += len(records)

    def replay(self) -> int:
        """Insert spooled traces, oldest file first; stops at the first failure. Returns rows replayed."""
        replayed = 0
        for path in self.pending_spool_files():
            records = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
            try:
                rows = [to_row(r) for r in records]
                clickhouse.insert(TRACES_TABLE, rows, list(TRACE_COLUMNS))
            except Exception as exc:
                log.info("spool replay deferred, ClickHouse still failing (%s)", type(exc).__name__)
                break
            path.unlink()
            otel.export(rows)
            replayed += len(records)
        if replayed:
            self.stats["replayed"] += replayed
            log.info("replayed %d spooled traces", replayed)
        return replayed


_writer: TraceWriter | None = None
_writer_lock = threading.Lock()


def get_writer() -> TraceWriter:
    """The process's writer, started on first use."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = TraceWriter(
                batch_size=settings.OPENTRACY_TRACE_BATCH_SIZE,
                interval_s=settings.OPENTRACY_TRACE_FLUSH_INTERVAL_S,
                queue_size=settings.OPENTRACY_TRACE_QUEUE_SIZE,
                spool_dir=settings.OPENTRACY_TRACE_SPOOL_DIR,
                replay_interval_s=settings.OPENTRACY_TRACE_REPLAY_INTERVAL_S,
            )
            _writer.start()
            atexit.register(_writer.stop)
        return _writer
