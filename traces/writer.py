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
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gateway import limits, metrics
from opentracy_site import clickhouse

from . import live, otel
from .ch_sql import TEXT_INDEXES, TRACE_COLUMNS, TRACES_TABLE
from .cost import Pricer, pricer

log = logging.getLogger(__name__)
Record = dict[str, Any]

DAY_S = 86_400
MAX_BATCH_SIZE = 20_000  # the most one insert takes when the queue is deep
ENCODE_SLICE = 250  # records per orjson call: each holds the GIL (~1.5 ms here), so request threads wait at most that
# Fields whose default (TRACE_COLUMNS) differs from the column's own default; every other field a
# record lacks is left out of the insert and takes the column's default (0, '', [], {}, NULL, the
# DEFAULT clauses of endpoint, retries, fallbacks and retention_days).
_FILL = {k: TRACE_COLUMNS[k] for k in ("request_messages", "request_params", "status")}
# How ClickHouse reads the batch (JSONEachRow, parsed in C++): keys that are not columns (the gateway
# adds a few) are skipped, attempts' tuples come as JSON arrays, omitted fields take column defaults.
# Float unix timestamps parse into DateTime64(3) with the same truncation as the Native insert did.
INSERT_SETTINGS = {
    "input_format_skip_unknown_fields": 1,
    "input_format_defaults_for_omitted_fields": 1,
    "input_format_json_named_tuples_as_objects": 0,
    "exclude_materialize_skip_indexes_on_insert": ", ".join(TEXT_INDEXES),
}


def price(records: list[Record]) -> None:
    """Stamp each successful trace with its cost (cost_input_usd, cost_output_usd, cost_total_usd),
    looking each (project, provider, model) price up once per batch. An unknown price stays NULL."""
    pricers: dict[tuple[int, str, str], Pricer] = {}
    for r in records:
        if r.get("cost_total_usd") is not None or r.get("status", 200) != 200:
            continue
        key = (r.get("project_id", 0), r.get("provider", ""), r.get("resolved_model", ""))
        try:
            if (cost := pricers.get(key)) is None:
                cost = pricers[key] = pricer(project_id=key[0], provider=key[1], model=key[2].split("/", 1)[-1])
            got = cost(r.get("prompt_tokens", 0), r.get("completion_tokens", 0), r.get("cached_tokens", 0))
        except Exception:  # a price lookup must never lose the trace
            log.exception("cost computation failed for trace %s", r.get("trace_id"))
            continue
        r["cost_input_usd"], r["cost_output_usd"], r["cost_total_usd"] = got


def _dumps(value: Any) -> bytes:
    # A value JSON has no type for (a stray Decimal, datetime or object in metadata) is written as its
    # text rather than failing the batch and, with it, the spool file that should keep it.
    return orjson.dumps(value, default=str)


def encode(records: list[Record]) -> bytes:
    """The batch as one JSON array of objects (JSONEachRow input), the fields TRACE_COLUMNS fills
    added where missing."""
    for r in records:
        for k, v in _FILL.items():
            if k not in r:
                r[k] = v
    parts = [_dumps(records[i : i + ENCODE_SLICE])[1:-1] for i in range(0, len(records), ENCODE_SLICE)]
    return b"[" + b",".join(parts) + b"]"


def insert(records: list[Record]) -> None:
    """Insert priced records into the traces table."""
    clickhouse.insert_json(TRACES_TABLE, encode(records), list(TRACE_COLUMNS), INSERT_SETTINGS)


def _account(records: list[Record]) -> None:
    """Spend per project and UTC day (budgets) and per model (/metrics), summed over the batch."""
    spend: dict[tuple[int, float], float] = {}
    by_model: dict[tuple[str, str], float] = {}
    for r in records:
        usd = r.get("cost_total_usd")
        if usd and r.get("endpoint") != "ingest":  # imported logs are not spend through the engine
            day = (int(r.get("project_id", 0)), float(r["timestamp"]) // DAY_S * DAY_S)
            spend[day] = spend.get(day, 0.0) + usd
            model = (r.get("provider", ""), r.get("resolved_model", ""))
            by_model[model] = by_model.get(model, 0.0) + usd
    for (provider, model_name), usd in by_model.items():
        metrics.cost(provider, model_name, usd)
    if spend:
        try:
            limits.add_spend(spend)  # keyed by the day's start: same day and month as each trace
        except Exception:  # budgets must never cost a trace
            log.exception("could not add spend to the budget counters")


class _Flush:
    """Queued by flush() behind what was submitted before it; set once all of that is stored or spooled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class TraceWriter:
    def __init__(
        self,
        *,
        batch_size: int,
        interval_s: float,
        queue_size: int,
        spool_dir: Path,
        replay_interval_s: float,
        max_batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        self.batch_size = batch_size
        self.max_batch_size = max(max_batch_size, batch_size)
        self.interval_s = interval_s
        self.queue_size = queue_size
        self.replay_interval_s = replay_interval_s
        self.spool_dir = spool_dir
        # A deque (append and popleft are atomic) and an event instead of queue.Queue: a trace costs
        # an append, not a lock round trip on both sides (5 µs per trace, measured).
        self._items: deque[Record | _Flush] = deque()
        self._ready = threading.Event()  # set by submit() while the writer thread waits for records
        self._flushes = 0  # flush markers queued and not yet taken (read by the writer thread)
        self._flush_lock = threading.Lock()
        # (batch, its JSON or None if it was spooled, flush markers) from the writer to the inserter thread
        self._jobs: queue.Queue[tuple[list[Record], bytes | None, list[_Flush]] | None] = queue.Queue(maxsize=1)
        self._spool_lock = threading.Lock()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inserter: threading.Thread | None = None
        self.stats = {"submitted": 0, "written": 0, "spilled": 0, "replayed": 0, "queue_full": 0, "write_errors": 0}

    # -- request side ---------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue a trace; the writer owns the dict from here on (it stamps the cost into it)."""
        self.stats["submitted"] += 1
        if len(self._items) >= self.queue_size:
            self.stats["queue_full"] += 1
            log.warning("trace queue full (%d): spooling to disk", self.queue_size)
            self._spill([record])
            return
        self._items.append(record)
        if not self._ready.is_set():
            self._ready.set()

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
        self._ready.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        otel.shutdown()  # send the spans of what was just written

    def queue_depth(self) -> int:
        return len(self._items)

    def flush(self) -> None:
        """Block until everything submitted so far is written or spooled."""
        marker = _Flush()
        with self._flush_lock:
            self._flushes += 1  # counted before it is queued: the writer never takes it for a record
        self._items.append(marker)
        self._ready.set()
        marker.done.wait()

    def pending_spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("traces-*.jsonl"))

    # -- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        # Batches are built here and inserted by a second thread: chDB releases the GIL while it
        # inserts, so pricing and encoding batch k+1 overlaps batch k's insert. One batch waits at
        # most (the hand-off holds one), so memory stays bounded when ClickHouse is slow.
        self._inserter = inserter = threading.Thread(target=self._insert_run, name="trace-inserter", daemon=True)
        inserter.start()
        next_replay = 0.0
        try:
            while not (self._stop.is_set() and not self._items):
                batch, flushes = self._collect()
                if batch or flushes:
                    self._jobs.put((batch, self._prepare(batch) if batch else None, flushes))
                if time.monotonic() >= next_replay:
                    self.replay()
                    next_replay = time.monotonic() + self.replay_interval_s
        finally:
            self._jobs.put(None)
            inserter.join()

    def _prepare(self, batch: list[Record]) -> bytes | None:
        """Price, account and encode a batch; None if that failed (the batch is then spooled)."""
        try:
            price(batch)
            _account(batch)
            return encode(batch)
        except Exception as exc:
            self._failed(batch, exc)
            return None

    def _insert_run(self) -> None:
        while (job := self._jobs.get()) is not None:
            batch, blob, flushes = job
            if blob is not None:
                self._store(batch, blob)
            for marker in flushes:  # after the batch that held everything queued before them
                marker.done.set()

    def _store(self, batch: list[Record], blob: bytes) -> None:
        try:
            clickhouse.insert_json(TRACES_TABLE, blob, list(TRACE_COLUMNS), INSERT_SETTINGS)
        except Exception as exc:
            self._failed(batch, exc)
            return
        self.stats["written"] += len(batch)
        otel.export(batch)  # only once stored: a spooled batch is exported when it is replayed
        live.publish(batch)  # the live tail (traces/live.py); never raises, never waits

    def _failed(self, batch: list[Record], exc: Exception) -> None:
        self.stats["write_errors"] += 1
        log.warning("ClickHouse insert failed (%s): spooling %d traces", type(exc).__name__, len(batch))
        self._spill(batch)

    def _wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for the queue to hold something; True if it does."""
        if not self._items:
            self._ready.clear()
            if not self._items and not self._stop.is_set():  # re-checked: a submit may have come in between
                self._ready.wait(timeout)
        return bool(self._items)

    def _collect(self) -> tuple[list[Record], list[_Flush]]:
        """Waits for a first record, then takes what is queued: at least batch_size (waiting up to
        the flush interval for it, at once when stopping or flushing), and as much as is queued, up
        to max_batch_size, when the queue is deep: under load, fewer and larger inserts."""
        if not self._wait(min(self.interval_s, self.replay_interval_s)):
            return [], []
        deadline = time.monotonic() + self.interval_s
        items, pop = self._items, self._items.popleft
        taken: list[Any] = []
        flushes: list[_Flush] = []
        while True:
            new = [pop() for _ in range(min(len(items), self.max_batch_size - len(taken)))]
            if self._flushes:  # flush() is waiting: take its markers out
                found = [x for x in new if type(x) is _Flush]
                new = [x for x in new if type(x) is not _Flush]
                with self._flush_lock:
                    self._flushes -= len(found)
                flushes += found
            taken += new
            if len(taken) >= self.batch_size or flushes or self._stop.is_set():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wait(remaining):
                break
        return taken, flushes

    def _spill(self, records: list[Record]) -> None:
        with self._spool_lock:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            path = self.spool_dir / f"traces-{time.time_ns()}-{next(self._seq)}.jsonl"
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                for r in records:
                    f.write(_dumps(r) + b"\n")
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
                price(records)  # a trace spooled before it was priced (queue full)
                insert(records)
            except Exception as exc:
                log.info("spool replay deferred, ClickHouse still failing (%s)", type(exc).__name__)
                break
            path.unlink()
            otel.export(records)
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
