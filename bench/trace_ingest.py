"""Trace ingest and trace queries at scale: insert throughput (rows/s) through the trace writer into
chDB, and the latency of the overview and of filtered traces pages at N traces (default 10M), each
next to a baseline measured in the same run.

Run (from the repository root):

    .venv/bin/python bench/trace_ingest.py                 # 10M traces (~13 min on 2 cores)
    .venv/bin/python bench/trace_ingest.py --quick         # 500k traces, smoke run (~2 min)
    .venv/bin/python bench/trace_ingest.py --rows 3000000 --raw-runs 10 --keep
    .venv/bin/python bench/trace_ingest.py --queries-only  # no insert comparison: bare insert + chDB copy, then queries
    .venv/bin/python bench/trace_ingest.py --quick --ingest-only  # only the insert comparison and breakdown (~1 min)

Everything runs in this process (django.setup(), no server): a private temp var dir (SQLite, chDB,
spool; removed on exit unless --keep), `migrate` and the ClickHouse migrations (the traces table, the
m0004 rollup with its latency/TTFT histograms, its materialized view and the skip indexes), and the
server's start-up GC and GIL settings (gc.freeze(), a 0.5 ms switch interval, as in
opentracy_site/lifecycle.py).

Data: synthetic, realistic trace records, the dict the gateway hands to TraceWriter.submit()
(gateway/chat.py `ChatCall.rec`): 5 projects (project 1 has 60% of the traffic), 18 models of 8
providers asked for by name, `provider/model` or one of 5 aliases (20 routes); prompts and answers made of real
user requests from ../shared/datasets (Banking77, CLINC150) behind per-project system prompts (a
quarter multi-turn, 5% with a pasted reference id such as `TX-3f9a2c1b0d`); request params, metadata
maps (env, feature, tier, session id), tags, users, lognormal latencies per model, TTFT on streams,
3.5% errors, retries and fallbacks in `attempts`; no cost (the writer prices each trace, as in
production). A pool of --pool distinct records (default 200k) is built first; each trace is a shallow
copy of a random one with a new trace_id and timestamp. Trace i of N is stamped start + i/N x 30 days
(jittered): the table fills in time order, as from live traffic, and covers the last 30 days.

Insert throughput. Records are fed in chunks of --chunk (50,000: the default queue size and a
multiple of every batch size used, so each batch is full and nothing waits on the flush interval).
Building a chunk (dict copies, ids, timestamps; for the bare baseline also `to_row`) is untimed.
Timed, per chunk:
    writer  TraceWriter.submit() of every record from the main thread (the gateway's side) while the
            writer threads drain the queue (pricing, budget and metrics accounting, JSONEachRow
            encoding, then a raw insert per batch on a second thread), then flush() until the last
            batch is stored, then a count() confirming every row is in ClickHouse.
    bare    opentracy_site.clickhouse.insert() of Native rows already built by to_row (below: what the
            writer built per trace before it sent JSON), 10,000 per call: the "bare clickhouse-connect
            insert" figure, the ceiling of a Python writer using that call.
The first --compare-rows (default 1.5M; 60% of a --quick run) rotate chunk by chunk between bare,
the writer at the production batch size (OPENTRACY_TRACE_BATCH_SIZE, 1000) and the writer with
10,000 per batch, so the three see the same table size and the same machine noise. rows/s = rows /
timed seconds. One more chunk is then taken apart, untimed: µs per row of each step of the writer.
The rest of the N rows (--fill copy, default) are copies made inside chDB by INSERT ... SELECT of the
rows already written (new trace_id, timestamps moved to the later part of the 30 days; the
materialized view and skip indexes run as for any insert), which makes 10M fit in the time budget;
its rate is printed for scale (the engine alone, no Python). --fill writer sends them through the
writer instead (~30 min for 10M here).

Queries, on project 1, after background merges settle (waited up to --settle-s, reported) and
the months before this one are merged into one part each, as the table's force-merge settings do an
hour after a month's last insert (--open-months skips it: the figures of that hour). Each
query is warmed once, then --runs timed runs (20), alternating with its baseline run by run. Every
run parses its filters anew, as a request does: a `range` moves with the clock, and a search uses a
new term each run, so ClickHouse's query condition cache never answers a repeat.
    overview       traces.stats.overview (what the overview page runs: by_model's and timeseries'
                   answers from one query), range=30d (day buckets), from the hourly rollup and its
                   latency/TTFT histograms. Baseline: the same call with min_latency_ms=0, a filter
                   every trace passes but the rollup cannot answer, so stats reads the traces table
                   (same SQL shape, same histograms). by_model and timeseries alone (the
                   /api/stats/* endpoints, one query each) are timed after it, for the notes.
    page_model_7d  traces.selectors.trace_list, first page (50, newest first), model=<the `smart`
                   alias's model, ~5% of traffic>, range=7d.
    page_search    trace_list, q=<a word in ~0.4-0.8% of traces>, no range (the API's default).
    page_needle    trace_list, q=<a pasted reference id: in ~rows/pool traces>, no range.
    page baselines the same trace_list call with its traces query run under `SETTINGS
                   use_primary_key=0, use_skip_indexes=0, optimize_read_in_order=0`: the same SQL and
                   result, without the primary key (project, time), the skip indexes (text, bloom)
                   and the read in key order that stops at the 51st row: a scan of those columns over
                   the table and a top-N sort, i.e. the page without the table's design.
Reported: p50/p95 ms and baseline/indexed ratios, the table's rows, parts and size, the rollup's
rows, memory.

Output: tables, then one JSON line {"name": "trace_ingest", "rows", "results": [{"name", "value",
"unit", "baseline", "ratio", "target", "target_op", "met"}, ...], "table": {...}}. Targets:
>= 100,000 traces/s through the writer (production batch size) on 2 cores; overview < 100 ms;
a filtered page < 200 ms (p50 and p95 each checked).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import queue
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASETS = ROOT.parent / "shared" / "datasets"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DAY_S = 86400.0
BIG_PROJECT = 1
BARE_BATCH = 10_000
RAW_SETTINGS = " SETTINGS use_primary_key=0, use_skip_indexes=0, optimize_read_in_order=0"
TARGETS: dict[str, tuple[float, str]] = {
    "writer_rows_per_s": (100_000.0, ">="),
    **{f"overview_p{q}_ms": (100.0, "<") for q in (50, 95)},
    **{f"page_{p}_p{q}_ms": (200.0, "<") for p in ("model_7d", "search", "needle") for q in (50, 95)},
}

# -- synthetic traffic --------------------------------------------------------------------------
# (requested_model, alias, resolved_model, provider, weight, median latency ms, median answer tokens)
MODELS: list[tuple[str, str, str, str, float, float, int]] = [
    ("gpt-4o-mini", "", "openai/gpt-4o-mini", "openai", 22, 700, 120),
    ("openai/gpt-4o-mini", "", "openai/gpt-4o-mini", "openai", 8, 700, 120),
    ("support-bot", "support-bot", "openai/gpt-4o-mini", "openai", 10, 750, 110),
    ("gpt-4o", "", "openai/gpt-4o", "openai", 6, 1400, 150),
    ("gpt-4.1", "", "openai/gpt-4.1", "openai", 4, 1500, 160),
    ("gpt-4.1-mini", "", "openai/gpt-4.1-mini", "openai", 7, 800, 130),
    ("cheap", "cheap", "openai/gpt-4.1-nano", "openai", 6, 400, 90),
    ("o4-mini", "", "openai/o4-mini", "openai", 2, 4000, 400),
    ("claude-3-5-haiku-latest", "", "anthropic/claude-3-5-haiku-latest", "anthropic", 4, 900, 140),
    ("smart", "smart", "anthropic/claude-sonnet-4-20250514", "anthropic", 5, 2200, 220),
    ("anthropic/claude-opus-4-1", "", "anthropic/claude-opus-4-1", "anthropic", 1, 3500, 260),
    ("gemini-2.0-flash", "", "gemini/gemini-2.0-flash", "gemini", 5, 600, 120),
    ("gemini/gemini-2.5-pro", "", "gemini/gemini-2.5-pro", "gemini", 2, 3000, 250),
    ("mistral-small-latest", "", "mistral/mistral-small-latest", "mistral", 3, 650, 110),
    ("mistral-large-latest", "", "mistral/mistral-large-latest", "mistral", 1, 1600, 160),
    ("llama-3.1-8b-instant", "", "groq/llama-3.1-8b-instant", "groq", 4, 250, 100),
    ("fast", "fast", "groq/llama-3.3-70b-versatile", "groq", 3, 450, 130),
    ("deepseek-chat", "", "deepseek/deepseek-chat", "deepseek", 3, 2000, 180),
    ("command-r", "", "cohere/command-r", "cohere", 1, 900, 120),
    ("student", "student", "local/smollm2-135m-support-v3", "local", 3, 300, 60),
]
PAGE_MODEL = "anthropic/claude-sonnet-4-20250514"
_BANK = "You are the support assistant of Northwind Bank."
# (project id, share of traffic, retention days (above the 30 days of data: no TTL drop mid-run),
#  corpus: "banking" / "clinc" / "both", system prompts)
PROJECTS: list[tuple[int, float, int, str, list[str]]] = [
    (1, 0.60, 90, "banking", [
        f"{_BANK} Answer the customer's question in two or three short sentences, never ask for a full "
        "card number or PIN, and offer to hand over to a person when the question is about fraud.",
        f"{_BANK} Be concise and polite. If the question is not about banking, say you can only help "
        "with Northwind accounts and cards.",
        "Classify the customer's message into one of Northwind's support intents and answer it briefly.",
    ]),
    (2, 0.10, 60, "clinc", ["You are Tern, a voice assistant. Answer in one sentence suitable for speech."]),
    (3, 0.10, 90, "both", ["You are a customer-service agent. Reply helpfully.", "Summarise the request in one line."]),
    (4, 0.10, 365, "clinc", ["You are a travel and productivity assistant for a corporate intranet. Be brief."]),
    (5, 0.10, 90, "banking", ["You are a fintech onboarding assistant: cards, top-ups and transfers."]),
]  # fmt: skip
FEATURES = ["chat", "search", "email-draft", "classify", "summarise", "faq", "voice", "escalation"]
TAGS = ["beta", "vip", "eval", "batch", "canary", "mobile", "web"]
ERRORS: list[tuple[int, str, str, float]] = [  # (status, error_class, message, share of traffic)
    (429, "rate_limit_error", "Rate limit reached for requests per minute. Please try again in 2s.", 0.015),
    (502, "server_error", "The upstream provider returned an invalid response.", 0.006),
    (504, "upstream_timeout", "The upstream provider did not answer within 120 s.", 0.004),
    (400, "context_length_exceeded", "This model's maximum context length is 128000 tokens.", 0.003),
    (500, "server_error", "The engine failed to handle this request.", 0.002),
    (499, "client_disconnected", "", 0.005),
]
REF_PREFIXES = ["TX", "ORD", "CASE", "INV"]
OPENERS = ["Thanks for reaching out.", "Sure, I can help with that.", "Good question.", "Happy to help.", "I see."]
CLOSERS = [
    "Is there anything else I can help you with?",
    "Let me know if that answers your question.",
    "You can also find this in the app under Help.",
    "If the problem persists, reply here and a colleague will take over.",
    "",
]


def load_corpus() -> dict[str, list[tuple[str, str]]]:
    """(text, label) per corpus: Banking77 train+test, CLINC150 every split (out-of-scope included)."""
    banking: list[tuple[str, str]] = []
    for name in ("train.csv", "test.csv"):
        with (DATASETS / "banking77" / name).open(newline="", encoding="utf-8") as f:
            banking += [(row["text"].strip(), row["category"]) for row in csv.DictReader(f)]
    data = json.loads((DATASETS / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    clinc = [(str(t).strip(), str(label)) for split in data.values() for t, label in split]
    return {"banking": banking, "clinc": clinc, "both": banking + clinc}


def build_templates(n: int, seed: int) -> list[dict[str, Any]]:
    """n distinct trace records (no trace_id / timestamp yet), the shape gateway/chat.py submits."""
    import orjson

    rng = random.Random(seed)
    corpus = load_corpus()
    by_label: dict[str, list[str]] = {}
    for text, label in corpus["both"]:
        by_label.setdefault(label, []).append(text)
    model_w = [m[4] for m in MODELS]
    proj_w = [p[1] for p in PROJECTS]
    err_share = sum(e[3] for e in ERRORS)
    err_w = [e[3] for e in ERRORS]
    keys = {p[0]: [p[0] * 100 + k for k in range(1, 2 + p[0] % 4)] for p in PROJECTS}
    out: list[dict[str, Any]] = []

    def answer(label: str) -> str:
        same = by_label[label]
        topic = label.replace("_", " ")
        body = " ".join(rng.sample(same, k=min(len(same), rng.randint(1, 3))))
        return f"{rng.choice(OPENERS)} About {topic}: {body} {rng.choice(CLOSERS)}".strip()

    for _ in range(n):
        pid, _share, retention, source, systems = rng.choices(PROJECTS, proj_w)[0]
        requested, alias, resolved, provider, _w, lat_ms, answer_tokens = rng.choices(MODELS, model_w)[0]
        text, label = rng.choice(corpus[source])
        messages: list[dict[str, str]] = [{"role": "system", "content": rng.choice(systems)}]
        if rng.random() < 0.25:  # a follow-up in a conversation
            prev, prev_label = rng.choice(corpus[source])
            messages += [{"role": "user", "content": prev}, {"role": "assistant", "content": answer(prev_label)}]
        if rng.random() < 0.05:  # people paste order numbers and ticket ids: the needles of a search
            text = f"{text} My reference is {rng.choice(REF_PREFIXES)}-{rng.getrandbits(40):010x}."
        messages.append({"role": "user", "content": text})
        stream = rng.random() < 0.3
        params: dict[str, Any] = {"temperature": rng.choice([0.0, 0.2, 0.7, 1.0])}
        if rng.random() < 0.6:
            params["max_tokens"] = rng.choice([256, 512, 1024])
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        if rng.random() < 0.1:
            params["top_p"] = 0.9
        prompt_chars = sum(len(m["content"]) for m in messages)
        rec: dict[str, Any] = {
            "endpoint": "messages" if rng.random() < 0.05 else "chat",
            "project_id": pid,
            "api_key_id": rng.choice(keys[pid]),
            "retention_days": retention,
            "requested_model": requested,
            "resolved_model": resolved,
            "provider": provider,
            "alias": alias,
            "request_messages": orjson.dumps(messages).decode(),
            "request_params": orjson.dumps(params).decode(),
            "stream": stream,
            "cooldowns_started": 0,  # extra keys the gateway sets are ignored by to_row
        }
        if rng.random() < 0.6:
            rec["user"] = f"user-{rng.randrange(20000)}"
        if rng.random() < 0.8:
            md = {"env": "prod" if rng.random() < 0.85 else "staging", "feature": rng.choice(FEATURES)}
            if rng.random() < 0.7:
                md["session_id"] = f"{rng.getrandbits(48):012x}"
            if rng.random() < 0.5:
                md["customer_tier"] = rng.choice(["free", "pro", "enterprise"])
            rec["metadata"] = md
        if rng.random() < 0.3:
            rec["tags"] = rng.sample(TAGS, k=rng.randint(1, 2))
        latency = lat_ms * math.exp(rng.gauss(0.0, 0.6))
        rec["overhead_ms"] = 0.4 * math.exp(rng.gauss(0.0, 0.5))
        attempts: list[tuple[str, int, str, float]] = []
        if rng.random() < 0.03:  # a retried 429 before the answer
            attempts.append((resolved, 429, "rate_limit_error", rng.uniform(20, 200)))
            rec["retries"] = 1
        if rng.random() < 0.01:  # fell back from another model
            other = rng.choices(MODELS, model_w)[0][2]
            attempts.append((other, 503, "server_error", rng.uniform(50, 3000)))
            rec["fallbacks"] = 1
        if rng.random() < err_share:
            status, error_class, message, _s = rng.choices(ERRORS, err_w)[0]
            rec.update(status=status, error_class=error_class, error_message=message)
            if status == 400:
                latency = rng.uniform(50, 300)
            attempts.append((resolved, status if status != 499 else 200, error_class, latency))
            rec["prompt_tokens"] = prompt_chars // 4 + 4 * len(messages) if status == 499 else 0
        else:
            reply = answer(label)
            finish = "length" if rng.random() < 0.04 else "stop"
            rec["response_message"] = orjson.dumps({"role": "assistant", "content": reply}).decode()
            rec["finish_reason"] = finish
            rec["prompt_tokens"] = prompt_chars // 4 + 4 * len(messages)
            rec["completion_tokens"] = max(1, int(answer_tokens * math.exp(rng.gauss(0.0, 0.4))))
            if rng.random() < 0.2:
                rec["cached_tokens"] = min(rec["prompt_tokens"], len(messages[0]["content"]) // 4)
            if stream:
                rec["ttft_ms"] = latency * rng.uniform(0.08, 0.35)
            attempts.append((resolved, 200, "", latency))
        rec["latency_ms"] = latency + sum(a[3] for a in attempts[:-1]) + rec["overhead_ms"]
        rec["attempts"] = attempts
        out.append(rec)
    return out


@dataclass
class Feed:
    """Trace records in arrival order: template copies with a fresh id and a timestamp spread over
    the 30 days before `end`."""

    templates: list[dict[str, Any]]
    total: int
    end: float
    seed: int
    issued: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed + 1)

    def chunk(self, n: int) -> list[dict[str, Any]]:
        n = min(n, self.total - self.issued)
        start, step = self.end - 30 * DAY_S, 30 * DAY_S / self.total
        rnd, tpl, k = self.rng.random, self.templates, len(self.templates)
        ids = os.urandom(16 * n)
        out = []
        for j in range(n):
            i = self.issued + j
            tid = str(uuid.UUID(bytes=ids[16 * j : 16 * j + 16], version=4))
            out.append({**tpl[int(rnd() * k)], "trace_id": tid, "timestamp": start + (i + rnd()) * step})
        self.issued += n
        return out


# -- measuring ----------------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def count_rows() -> int:
    from opentracy_site import clickhouse

    return int(clickhouse.query("SELECT count() FROM traces")[1][0][0])


# -- insert -------------------------------------------------------------------------------------
@dataclass
class Ingest:
    """Rows, timed seconds and CPU seconds (process, writer thread) per method."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    writer_cpu: dict[str, float] = field(default_factory=dict)
    chunk_rates: dict[str, list[float]] = field(default_factory=dict)

    def add(self, method: str, rows: int, secs: float, cpu: float, wcpu: float) -> None:
        self.rows[method] = self.rows.get(method, 0) + rows
        self.seconds[method] = self.seconds.get(method, 0.0) + secs
        self.cpu[method] = self.cpu.get(method, 0.0) + cpu
        self.writer_cpu[method] = self.writer_cpu.get(method, 0.0) + wcpu
        self.chunk_rates.setdefault(method, []).append(rows / secs)

    def rate(self, method: str) -> float:
        return self.rows[method] / self.seconds[method] if self.seconds.get(method) else 0.0


def to_row(record: dict[str, Any]) -> list[Any]:
    """A record as a Native row in TRACE_COLUMNS order, priced (what the writer built per trace
    before it sent JSON): the bare baseline's input."""
    from traces.ch_sql import TRACE_COLUMNS
    from traces.cost import compute_cost

    r = {**TRACE_COLUMNS, **record}
    r["trace_id"] = uuid.UUID(str(r["trace_id"]))
    r["timestamp"] = datetime.fromtimestamp(float(r["timestamp"]), tz=UTC)
    if r["cost_total_usd"] is None and r["status"] == 200:
        r["cost_input_usd"], r["cost_output_usd"], r["cost_total_usd"] = compute_cost(
            project_id=r["project_id"],
            provider=r["provider"],
            model=r["resolved_model"].split("/", 1)[-1],
            prompt=r["prompt_tokens"],
            completion=r["completion_tokens"],
            cached=r["cached_tokens"],
        )
    return [r[c] for c in TRACE_COLUMNS]


def run_bare(chunk: list[dict[str, Any]]) -> tuple[float, float]:
    from opentracy_site import clickhouse
    from traces.ch_sql import TRACE_COLUMNS, TRACES_TABLE

    rows = [to_row(r) for r in chunk]  # untimed: the baseline inserts rows already built
    chunk.clear()
    cols = list(TRACE_COLUMNS)
    cpu0, t0 = process_cpu_s(), time.perf_counter()
    for i in range(0, len(rows), BARE_BATCH):
        clickhouse.insert(TRACES_TABLE, rows[i : i + BARE_BATCH], cols)
    return time.perf_counter() - t0, process_cpu_s() - cpu0


def run_writer(writer: Any, chunk: list[dict[str, Any]], expect_total: int) -> tuple[float, float, float]:
    ids = [t.native_id for t in (writer._thread, writer._inserter) if t is not None]  # batching + insert threads

    def threads_cpu() -> float:
        return sum(thread_cpu_s(i) for i in ids)

    before = dict(writer.stats)
    n = len(chunk)
    cpu0, w0, t0 = process_cpu_s(), threads_cpu(), time.perf_counter()
    submit = writer.submit
    for rec in chunk:
        submit(rec)
    chunk.clear()  # the queue holds the only references, as in the engine
    writer.flush()
    total = count_rows()
    secs = time.perf_counter() - t0
    stats = writer.stats
    if stats["written"] - before["written"] != n or total != expect_total:
        raise SystemExit(f"writer lost rows: stats {stats}, count {total} != {expect_total}")
    if stats["spilled"] or stats["queue_full"] or stats["write_errors"]:
        raise SystemExit(f"writer spilled or failed: {stats}")
    return secs, process_cpu_s() - cpu0, threads_cpu() - w0


def make_writer(batch_size: int, spool: Path) -> Any:
    from django.conf import settings

    from traces.writer import TraceWriter

    w = TraceWriter(
        batch_size=batch_size,
        interval_s=settings.OPENTRACY_TRACE_FLUSH_INTERVAL_S,
        queue_size=settings.OPENTRACY_TRACE_QUEUE_SIZE,
        spool_dir=spool,
        replay_interval_s=settings.OPENTRACY_TRACE_REPLAY_INTERVAL_S,
    )
    w.start()
    return w


def copy_fill(start: float, step: float, written: int, total: int, slice_rows: int = 500_000) -> tuple[int, float]:
    """Rows written..total as copies of rows 0..written made by chDB (INSERT ... SELECT): new
    trace ids, timestamps moved to the copy's own place in the timeline. Returns (rows, seconds)."""
    from opentracy_site import clickhouse

    sql = (
        "INSERT INTO traces SELECT * REPLACE (generateUUIDv4() AS trace_id,"
        " timestamp + toIntervalMillisecond({shift:Int64}) AS timestamp) FROM (SELECT * FROM traces"
        " WHERE timestamp >= {a:DateTime64(3, 'UTC')} AND timestamp < {b:DateTime64(3, 'UTC')})"
        " SETTINGS max_insert_threads = 2"  # the subquery: a WHERE beside the REPLACE would see the alias
    )
    before, t0, o = count_rows(), time.perf_counter(), written
    while o < total:
        src = (o - written) % written
        n = min(slice_rows, total - o, written - src)
        a, b = (datetime.fromtimestamp(start + i * step, UTC) for i in (src, src + n))
        clickhouse.command(sql, {"shift": round((o - src) * step * 1000), "a": a, "b": b})
        o += n
    return count_rows() - before, time.perf_counter() - t0


def breakdown(chunk: list[dict[str, Any]], batch_sizes: tuple[int, ...], reps: int = 5) -> dict[str, float]:
    """µs per row of each step the writer takes, on one chunk (untimed; its rows are inserted once).
    Python steps: the fastest of `reps` passes over a 10k sample (the machine is shared: the minimum
    is the cost, the rest other people's load). Inserts: the median batch. Lines marked "before"
    time what the writer did before it sent JSON, for comparison."""
    from gateway import limits, metrics
    from opentracy_site import clickhouse
    from traces import writer as writer_mod
    from traces.ch_sql import TRACE_COLUMNS, TRACES_TABLE
    from traces.cost import compute_cost

    sample = chunk[:10_000]
    n = len(sample)
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any], fresh: bool = False) -> Any:
        best, res = math.inf, None
        for _ in range(reps):
            arg = [dict(r) for r in sample] if fresh else sample  # steps that stamp the records get copies
            t0 = time.perf_counter()
            res = fn(arg) if fresh else fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = best / n * 1e6
        return res

    q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=n + 1)

    def queue_cycle() -> None:
        for r in sample:
            q.put_nowait(r)
        for _ in range(n):
            q.get(timeout=1.0)
            q.task_done()

    timed("before: queue.Queue put_nowait + get(timeout) + task_done", queue_cycle)
    w = writer_mod.TraceWriter(
        batch_size=n, interval_s=1.0, queue_size=n + 1, spool_dir=Path(tempfile.gettempdir()), replay_interval_s=60
    )

    def deque_cycle() -> None:
        for r in sample:
            w.submit(r)
        if len(w._collect()[0]) != n:
            raise SystemExit("breakdown: the writer's queue lost records")

    timed("queue: TraceWriter.submit + _collect (deque)", deque_cycle)

    def costs() -> None:
        for r in sample:
            if r.get("status", 200) == 200:
                compute_cost(
                    project_id=r["project_id"],
                    provider=r["provider"],
                    model=r["resolved_model"].split("/", 1)[-1],
                    prompt=r.get("prompt_tokens", 0),
                    completion=r.get("completion_tokens", 0),
                    cached=r.get("cached_tokens", 0),
                )

    timed("before: compute_cost per trace", costs)

    def price(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        writer_mod.price(batch)
        return batch

    priced = timed("price (one lookup per project and model per batch)", price, True)
    timed("before: to_row (Native row: dict merge, UUID, datetime, compute_cost)", lambda: [to_row(r) for r in sample])
    timed("_account (spend per project and day, metrics per model)", lambda: writer_mod._account(priced))

    def per_trace_metrics() -> None:
        for r in sample:
            metrics.cost(r.get("provider", ""), r.get("resolved_model", ""), 1e-9)

    timed("before: _account's metrics.cost, one call per trace", per_trace_metrics)
    spend = {(BIG_PROJECT, float(r["timestamp"])): 1e-6 for r in sample}
    timed("before: _account's limits.add_spend, one key per trace", lambda: limits.add_spend(spend))
    timed("encode (orjson, JSONEachRow)", lambda: writer_mod.encode(priced))
    cols = list(TRACE_COLUMNS)
    c = clickhouse.client()
    types = c.create_insert_context(TRACES_TABLE, column_names=cols).column_types
    rows = [to_row(r) for r in sample]

    def serialise() -> bytes:
        ctx = c.create_insert_context(TRACES_TABLE, column_names=cols, column_types=types, data=rows)
        blob = b"".join(c._transform.build_insert(ctx))
        vars(ctx).clear()
        return blob

    timed("before: Native serialisation (clickhouse-connect, Python)", serialise)
    # What traces.writer.insert does: encode, then raw_insert (chDB: temp file + INSERT ... FROM
    # INFILE, JSON parsing, the materialized view, the indexes). 1000 rows per call for the first
    # fifth of the chunk, 10,000 for the rest.
    writer_mod.price(chunk)
    cut = len(chunk) // 5 // batch_sizes[0] * batch_sizes[0]
    blobs: list[bytes] = []
    for bs, part in zip(batch_sizes, (chunk[:cut], chunk[cut:]), strict=True):
        steps: dict[str, list[float]] = {"enc": [], "chdb": []}
        for i in range(0, len(part), bs):
            batch = part[i : i + bs]
            t0 = time.perf_counter()
            blob = writer_mod.encode(batch)
            t1 = time.perf_counter()
            clickhouse.insert_json(TRACES_TABLE, blob, cols, writer_mod.INSERT_SETTINGS)
            t2 = time.perf_counter()
            if len(batch) == bs:
                for k, v in (("enc", t1 - t0), ("chdb", t2 - t1)):
                    steps[k].append(v / bs * 1e6)
                if bs == batch_sizes[-1]:
                    blobs.append(blob)
        enc_us, chdb_us = (statistics.median(v) for v in steps.values())
        out[f"insert, {bs}/batch: whole"] = enc_us + chdb_us
        out[f"  encode, {bs}/batch"] = enc_us
        out[f"  chDB (temp file, INSERT FROM INFILE, JSON parsing, view, indexes), {bs}/batch"] = chdb_us
    out.update(engine_costs(blobs, batch_sizes[-1], cols))
    return out


def engine_costs(blobs: list[bytes], rows: int, cols: list[str]) -> dict[str, float]:
    """chDB's µs per row for the same JSON blocks into scratch copies of the traces table: as the
    writer inserts (its own chain of rollup views, text indexes left to merges), the same with the text
    indexes built on insert (ClickHouse's default), then without the view, without the text
    indexes, without any skip index, and a Null table (JSON parsing only). Blocks go to each in
    turn, twice over; median block."""
    from opentracy_site import clickhouse
    from traces.ch_sql import TEXT_INDEXES
    from traces.writer import INSERT_SETTINGS

    indexed = {k: v for k, v in INSERT_SETTINGS.items() if k != "exclude_materialize_skip_indexes_on_insert"}
    _c, idx = clickhouse.query("SELECT name FROM system.data_skipping_indices WHERE table = 'traces'")
    every_index = tuple(r[0] for r in idx)
    # name: (indexes dropped, rollup view, insert settings, label)
    variants: dict[str, tuple[tuple[str, ...], bool, dict[str, Any], str]] = {
        "bench_full": ((), True, INSERT_SETTINGS, "chDB, same blocks, scratch copy of traces, as the writer inserts"),
        "bench_indexed": ((), True, indexed, "chDB, same blocks, text indexes built on insert (default)"),
        "bench_no_view": ((), False, INSERT_SETTINGS, "chDB, same blocks, as the writer, no materialized view"),
        "bench_no_text": (TEXT_INDEXES, False, INSERT_SETTINGS, "chDB, same blocks, no view, no text indexes"),
        "bench_no_skip_index": (every_index, False, INSERT_SETTINGS, "chDB, same blocks, no view, no skip index"),
        "bench_null": ((), False, INSERT_SETTINGS, "chDB, same blocks, Null engine (JSON parsing only)"),
    }
    # The rollup views' own SELECTs (whichever migrations made them last), to read each scratch table.
    _c, views = clickhouse.query(
        "SELECT name, as_select FROM system.tables WHERE database = currentDatabase()"
        " AND name IN ('traces_hourly_mv', 'traces_daily_mv')"
    )
    view = dict(views)
    scratch: list[str] = []
    for name, (drop, with_view, _s, _label) in variants.items():
        clickhouse.command(f"CREATE TABLE {name} AS traces" + (" ENGINE = Null" if name == "bench_null" else ""))
        scratch.insert(0, name)
        for index in drop:
            clickhouse.command(f"ALTER TABLE {name} DROP INDEX {index}")
        if with_view:  # traces -> traces_hourly -> traces_daily, as the migrations chain them
            for source, rollup in (("traces", "traces_hourly"), ("traces_hourly", "traces_daily")):
                clickhouse.command(f"CREATE TABLE {name}_{rollup} AS {rollup}")
                src = name if source == "traces" else f"{name}_{source}"
                select = re.sub(rf"\bFROM\s+(\w+\.)?{source}\b", f"FROM {src}", view[f"{rollup}_mv"])
                clickhouse.command(f"CREATE MATERIALIZED VIEW {name}_{rollup}_mv TO {name}_{rollup} AS {select}")
                scratch[:0] = [f"{name}_{rollup}_mv", f"{name}_{rollup}"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for blob in blobs * 2:
        for name, (_d, _v, settings, _label) in variants.items():
            t0 = time.perf_counter()
            clickhouse.insert_json(name, blob, cols, settings)
            times[name].append(time.perf_counter() - t0)
    for name in scratch:
        clickhouse.command(f"DROP TABLE {name}")
    return {f"  {v[3]}": statistics.median(times[name]) / rows * 1e6 for name, v in variants.items()}


def gil_probe() -> float:
    """How fast a pure-Python thread runs during a chDB query, relative to during a sleep of the same
    length (1.0: the engine releases the GIL for the whole call). Median of 3 alternations."""
    from opentracy_site import clickhouse

    ratios = []
    for _ in range(3):
        rates = []
        for work in ("sleep", "chdb"):
            stop, spins = threading.Event(), [0]

            def spin(stop: threading.Event = stop, spins: list[int] = spins) -> None:
                while not stop.is_set():
                    spins[0] += 1

            t = threading.Thread(target=spin, daemon=True)
            t0 = time.perf_counter()
            t.start()
            if work == "sleep":
                time.sleep(0.25)
            else:
                clickhouse.command("SELECT count() FROM numbers(30000000) WHERE number % 7 = 3")
            stop.set()
            t.join()
            rates.append(spins[0] / (time.perf_counter() - t0))
        ratios.append(rates[1] / rates[0])
    return statistics.median(ratios)


# -- queries ------------------------------------------------------------------------------------
def parts_info() -> dict[str, Any]:
    from opentracy_site import clickhouse

    _c, rows = clickhouse.query(
        "SELECT table, count(), sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
        "WHERE active AND database = currentDatabase() AND table IN ('traces', 'traces_hourly') GROUP BY table"
    )
    info: dict[str, Any] = {
        r[0]: {"parts": int(r[1]), "rows": int(r[2]), "disk_bytes": int(r[3]), "raw_bytes": int(r[4])} for r in rows
    }
    info["merges_running"] = int(clickhouse.query("SELECT count() FROM system.merges")[1][0][0])
    _c, mem = clickhouse.query("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'")
    info["chdb_memory_tracked_mib"] = round(int(mem[0][0]) / 2**20, 1) if mem else None
    return info


def close_months() -> tuple[int, float]:
    """Merge each partition before the current month into one part, as the table's force-merge
    settings do an hour after a month's last insert (traces/ch_sql.py, m0008), which builds the text
    indexes of the parts the writer left without them. Returns (partitions merged, seconds)."""
    from opentracy_site import clickhouse

    _c, rows = clickhouse.query(
        "SELECT DISTINCT partition FROM system.parts WHERE active AND database = currentDatabase()"
        " AND table = 'traces' AND partition < toString(toYYYYMM(now()))"
    )
    t0 = time.monotonic()
    for (partition,) in rows:
        clickhouse.command(f"OPTIMIZE TABLE traces PARTITION {int(partition)} FINAL")
    return len(rows), time.monotonic() - t0


def settle(max_s: float) -> float:
    """Wait until no merge runs (seen twice, 1 s apart) or max_s passes; returns seconds waited."""
    t0 = time.monotonic()
    quiet = 0
    while time.monotonic() - t0 < max_s and quiet < 2:
        quiet = quiet + 1 if parts_info()["merges_running"] == 0 else 0
        time.sleep(1.0)
    return time.monotonic() - t0


class RawScan:
    """Inside the block, queries on the traces table run without primary key, skip indexes and
    read-in-order (the pages' baseline); everything else (annotations, parsing) is unchanged."""

    def __enter__(self) -> RawScan:
        from opentracy_site import clickhouse

        self._orig = clickhouse.query

        def query(
            sql: str, parameters: dict[str, Any] | None = None, column_formats: dict[str, str] | None = None
        ) -> tuple[list[str], list[tuple[Any, ...]]]:
            if " FROM traces WHERE " in sql and "SETTINGS" not in sql:
                sql += RAW_SETTINGS
            return self._orig(sql, parameters, column_formats)

        clickhouse.query = query
        return self

    def __exit__(self, *exc: object) -> None:
        from opentracy_site import clickhouse

        clickhouse.query = self._orig


def search_words(templates: list[dict[str, Any]], lo: float, hi: float, k: int, seed: int) -> list[tuple[str, float]]:
    """k words (7+ letters) found as substrings in a share lo..hi of the big project's traces."""
    texts = [
        (t["request_messages"] + " " + t.get("response_message", "")).lower()
        for t in templates
        if t["project_id"] == BIG_PROJECT
    ]
    docs: dict[str, int] = {}
    for text in texts[:20_000]:
        for w in set(re.findall(r"[a-z]{7,}", text)):
            docs[w] = docs.get(w, 0) + 1
    sample = min(len(texts), 20_000)
    cands = sorted(w for w, c in docs.items() if lo <= c / sample <= hi)
    random.Random(seed).shuffle(cands)
    out = []
    for w in cands[: k * 4]:
        share = sum(w in t for t in texts) / len(texts)  # a substring, as LIKE '%w%'
        if lo <= share <= hi:
            out.append((w, share))
        if len(out) == k:
            break
    return out


def needles(templates: list[dict[str, Any]], k: int, seed: int) -> list[str]:
    """k reference ids pasted into the big project's prompts (each in one template, so in about
    rows/pool traces, spread over the 30 days)."""
    found = [
        m.group(0)
        for t in templates
        if t["project_id"] == BIG_PROJECT
        for m in [re.search(r"(?:TX|ORD|CASE|INV)-[0-9a-f]{10}", t["request_messages"])]
        if m
    ]
    random.Random(seed).shuffle(found)
    return found[:k]


@dataclass
class Pair:
    key: str
    label: str
    indexed: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)


def time_pair(
    key: str, label: str, runs: int, raw_runs: int, indexed: Callable[[int], Any], raw: Callable[[int], Any]
) -> tuple[Pair, Any, Any]:
    """Warm each once (run 0), then alternate; the baseline stops after raw_runs."""
    pair = Pair(key, label)
    first_i, first_r = indexed(0), raw(0)
    for i in range(1, runs + 1):
        for fn, out in ((indexed, pair.indexed), (raw, pair.raw)):
            if out is pair.raw and i > raw_runs:
                continue
            t0 = time.perf_counter()
            fn(i)
            out.append((time.perf_counter() - t0) * 1000)
    return pair, first_i, first_r


def run_queries(templates: list[dict[str, Any]], runs: int, raw_runs: int, seed: int) -> tuple[list[Pair], list[str]]:
    from traces import stats
    from traces.filters import parse_filters
    from traces.selectors import trace_list

    notes: list[str] = []
    parts_ms: dict[str, list[float]] = {}

    def overview(extra: dict[str, str]) -> Callable[[int], Any]:
        def go(_i: int) -> Any:
            return stats.overview(project_id=BIG_PROJECT, filters=parse_filters({"range": "30d", **extra}))

        return go

    def raw_scan(fn: Callable[[int], Any]) -> Callable[[int], Any]:
        def go(i: int) -> Any:
            with RawScan():
                return fn(i)

        return go

    def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
        return [r["trace_id"] for r in a] == [r["trace_id"] for r in b]

    label = "overview: by_model + timeseries, 30d"
    ov, (bm_i, ts_i), (bm_r, _ts_r) = time_pair(
        "overview", label, runs, raw_runs, overview({}), overview({"min_latency_ms": "0"})
    )
    for _ in range(max(5, runs // 2)):  # the API endpoints alone, one query each, on the rollup
        f = parse_filters({"range": "30d"})
        for name, fn in (("by_model", stats.by_model), ("timeseries", stats.timeseries)):
            t0 = time.perf_counter()
            fn(project_id=BIG_PROJECT, filters=f)
            parts_ms.setdefault(f"API {name} alone", []).append((time.perf_counter() - t0) * 1000)
        # Hour points cannot come from the daily rollup: the overview as it was before m0007.
        t0 = time.perf_counter()
        stats.overview(project_id=BIG_PROJECT, filters=f, bucket="hour")
        parts_ms.setdefault("overview, hour points (hourly rollup only)", []).append((time.perf_counter() - t0) * 1000)
    notes.append(
        f"overview: {bm_i['source']} vs {bm_r['source']}; requests {bm_i['totals']['requests']:,} (rollup, whole "
        f"hours) vs {bm_r['totals']['requests']:,} (raw); {len(bm_i['models'])} model rows, "
        f"{len(ts_i['points'])} {ts_i['bucket']} points; p50 ms "
        + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in parts_ms.items())
    )

    def page_model(_i: int) -> Any:
        return trace_list(project_id=BIG_PROJECT, filters=parse_filters({"model": PAGE_MODEL, "range": "7d"}))

    pm, (ri, _n1), (rr, _n2) = time_pair(
        "page_model_7d", "page: model=<5% model>, range=7d", runs, raw_runs, page_model, raw_scan(page_model)
    )
    notes.append(f"page model {PAGE_MODEL}: {len(ri)} rows, same as baseline: {same(ri, rr)}")

    words = search_words(templates, 0.004, 0.008, runs + 1, seed)
    if len(words) < runs + 1:
        raise SystemExit(f"only {len(words)} search words in the band; use fewer --runs")

    def page_search(i: int) -> Any:
        return trace_list(project_id=BIG_PROJECT, filters=parse_filters({"q": words[i][0]}))

    ps, (ri, _n3), (rr, _n4) = time_pair(
        "page_search", "page: q=<word in ~0.6%>, all time", runs, raw_runs, page_search, raw_scan(page_search)
    )
    notes.append(
        f"page search: {len(ri)} rows, same as baseline: {same(ri, rr)}; words (share of project-1 traces): "
        + ", ".join(f"{w} {100 * s:.2f}%" for w, s in words)
    )

    refs = needles(templates, runs + 1, seed)

    def page_needle(i: int) -> Any:
        return trace_list(project_id=BIG_PROJECT, filters=parse_filters({"q": refs[i]}))

    pn, (ri, _n5), (rr, _n6) = time_pair(
        "page_needle", "page: q=<reference id>, all time", runs, raw_runs, page_needle, raw_scan(page_needle)
    )
    notes.append(f"page needle: {refs[0]!r} -> {len(ri)} rows, same as baseline: {same(ri, rr)}")
    return [ov, pm, ps, pn], notes


# -- report -------------------------------------------------------------------------------------
def result(name: str, value: float, unit: str, baseline: float | None, ratio: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": None if ratio is None else round(ratio, 4),
        "target": None,
        "target_op": None,
        "met": None,
    }
    if name in TARGETS:
        target, op = TARGETS[name]
        row.update(target=target, target_op=op, met=bool(value >= target if op == ">=" else value < target))
    return row


def configure(tmp: Path) -> None:
    """A private engine in tmp: environment, django.setup(), both migrations."""
    for name in ("DATABASE_URL", "CLICKHOUSE_URL", "REDIS_URL", "OPENTRACY_TRACE_SPOOL_DIR"):
        os.environ.pop(name, None)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        os.environ.pop(name, None)
    os.environ.update(
        OPENTRACY_VAR_DIR=str(tmp / "var"),
        DJANGO_SETTINGS_MODULE="opentracy_site.settings",
        OPENTRACY_LOCAL_MODEL_PRELOAD="false",
        DEBUG="false",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from traces.migrations_ch import apply_migrations

    call_command("migrate", "--noinput", verbosity=0)
    apply_migrations()


def print_ingest(ing: Ingest, batch: int, gil: float, bd: dict[str, float], copy: tuple[int, float]) -> None:
    labels = {
        "bare": f"bare clickhouse.insert, {BARE_BATCH}/call",
        "writer": f"writer, {batch}/batch (production)",
        "writer_10k": "writer, 10000/batch",
        "writer_fill": f"writer, {batch}/batch (fill)",
    }
    print(f"{'insert':<36}{'rows':>11}{'timed s':>9}{'rows/s':>10}{'chunk min-max':>18}{'CPU %':>8}{'writer %':>10}")
    for m, label in labels.items():
        if m in ing.rows:
            s, cr = ing.seconds[m], ing.chunk_rates[m]
            print(
                f"{label:<36}{ing.rows[m]:>11,}{s:>9.1f}{ing.rate(m):>10,.0f}{f'{min(cr):,.0f}-{max(cr):,.0f}':>18}"
                f"{100 * ing.cpu[m] / s:>8.0f}{100 * ing.writer_cpu[m] / s:>10.0f}"
            )
    if copy[0]:
        print(f"{'chDB INSERT ... SELECT copy (fill)':<36}{copy[0]:>11,}{copy[1]:>9.1f}{copy[0] / copy[1]:>10,.0f}")
    print("  (CPU %: process CPU time / timed wall time, % of one core; writer %: the writer's two threads')")
    print(f"  a Python thread runs at {100 * gil:.0f}% of its speed during a chDB query (100%: GIL released)")
    if bd:
        print("where a row's time goes, µs per row (one chunk, untimed):")
        for k, v in bd.items():
            print(f"  {k:<74}{v:>8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="traces in the table (default 10M)")
    ap.add_argument("--quick", action="store_true", help="500k traces (smoke run)")
    ap.add_argument("--pool", type=int, default=200_000, help="distinct records (default 200k)")
    ap.add_argument("--chunk", type=int, default=50_000, help="records per timed chunk (default 50k)")
    ap.add_argument("--compare-rows", type=int, help="rows rotated bare/writer/writer_10k (default 1.5M)")
    ap.add_argument("--fill", choices=("copy", "writer"), default="copy", help="how the rest is inserted")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per query (default 20)")
    ap.add_argument("--raw-runs", type=int, help="timed runs per baseline (default: --runs)")
    ap.add_argument("--settle-s", type=float, default=240.0, help="longest wait for merges before queries")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp var dir")
    ap.add_argument(
        "--queries-only",
        action="store_true",
        help="skip the insert comparison: the first rows by bare insert, the rest by the chDB copy, then the queries",
    )
    ap.add_argument(
        "--open-months",
        action="store_true",
        help="query before the months before this one are force-merged (the hour after a month closes)",
    )
    ap.add_argument("--ingest-only", action="store_true", help="only the insert comparison and breakdown")
    args = ap.parse_args()
    total = 500_000 if args.quick else args.rows
    chunk = args.chunk
    compare = args.compare_rows if args.compare_rows is not None else min(1_500_000, int(total * 0.6))
    compare_chunks = compare // chunk // 3 * 3
    raw_runs = args.raw_runs if args.raw_runs is not None else args.runs
    if args.queries_only and args.fill == "writer":
        raise SystemExit("--queries-only fills by the chDB copy; leave out --fill writer")

    tmp = Path(tempfile.mkdtemp(prefix="ot-bench-ingest-"))
    load_before, t_all = loadavg(), time.monotonic()
    try:
        configure(tmp)
        from django.conf import settings

        from opentracy_site import clickhouse

        batch = settings.OPENTRACY_TRACE_BATCH_SIZE
        if chunk % batch or chunk % 10_000 or chunk > settings.OPENTRACY_TRACE_QUEUE_SIZE:
            raise SystemExit(f"--chunk: a multiple of {batch} and 10000, at most the queue size")
        if compare_chunks < 3 or (compare_chunks + 1) * chunk > total:
            raise SystemExit("--rows too small for --compare-rows and --chunk")
        print(f"var dir {tmp / 'var'}; {total:,} traces; nproc {os.cpu_count()}; load avg {load_before}")
        t = time.monotonic()
        templates = build_templates(min(args.pool, total), args.seed)
        print(f"built {len(templates):,} distinct records in {time.monotonic() - t:.0f} s; RSS {rss_mib():.0f} MiB")
        gc.freeze()  # as the server at start-up: long-lived objects out of the collector's scans
        sys.setswitchinterval(0.0005)  # and background threads hand the GIL back every 0.5 ms
        feed = Feed(templates, total, time.time(), args.seed)
        gil = 0.0 if args.queries_only else gil_probe()
        writers: dict[str, Any] = {}
        if not args.queries_only:
            writers["writer"] = make_writer(batch, tmp / "spool-1")
            writers["writer_10k"] = make_writer(10_000, tmp / "spool-2")

        methods = ["bare"] if args.queries_only else ["bare", "writer", "writer_10k"]
        plan = [methods[(i % 3 + i // 3) % len(methods)] for i in range(compare_chunks)]  # rotated every round
        if args.fill == "writer":
            plan += ["writer_fill"] * ((total - (compare_chunks + 1) * chunk) // chunk)
        ing, inserted, gen_s, t_ingest = Ingest(), 0, 0.0, time.monotonic()
        for idx, method in enumerate(plan):
            t = time.perf_counter()
            records = feed.chunk(chunk)
            gen_s += time.perf_counter() - t
            n = len(records)
            if method == "bare":
                secs, cpu, wcpu = (*run_bare(records), 0.0)
            else:
                secs, cpu, wcpu = run_writer(writers[method.replace("_fill", "")], records, inserted + n)
            inserted += n
            ing.add(method, n, secs, cpu, wcpu)
            if (idx + 1) % 20 == 0 or idx == len(plan) - 1:
                print(
                    f"  {inserted:>11,} rows {time.monotonic() - t_ingest:5.0f} s; last chunk {method} "
                    f"{n / secs:,.0f} rows/s; RSS {rss_mib():.0f} MiB; load {loadavg()}",
                    flush=True,
                )
        for w in writers.values():
            w.stop()
        bd: dict[str, float] = {}
        if not args.queries_only:
            rest = feed.chunk(chunk if args.fill == "copy" else total - inserted)
            bd = breakdown(rest, (batch, 10_000))
        inserted = feed.issued
        copied = (0, 0.0)
        if args.fill == "copy" and inserted < total and not args.ingest_only:
            copied = copy_fill(feed.end - 30 * DAY_S, 30 * DAY_S / total, inserted, total)
            inserted += copied[0]
            print(f"  {inserted:>11,} rows after the chDB copy fill ({copied[1]:.0f} s)", flush=True)
        if count_rows() != inserted:
            raise SystemExit(f"count {count_rows()} != inserted {inserted}")
        ingest_s = time.monotonic() - t_ingest
        print(f"ingest: {inserted:,} rows in {ingest_s:.0f} s (record building {gen_s:.0f} s of it, untimed)")

        parts_before = parts_info()["traces"]["parts"]
        waited = 0.0 if args.ingest_only else settle(args.settle_s)
        info = parts_info()
        print(f"merges: traces parts {parts_before} -> {info['traces']['parts']} after {waited:.0f} s", flush=True)
        if not args.ingest_only and not args.open_months:
            closed, closing_s = close_months()
            print(f"closed months force-merged: {closed} partition(s) in {closing_s:.0f} s", flush=True)
        load_q = loadavg()
        pairs, notes = ([], []) if args.ingest_only else run_queries(templates, args.runs, raw_runs, args.seed)
        info = parts_info()
        load_after = loadavg()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rollup_rows = int(clickhouse.query("SELECT count() FROM traces_hourly")[1][0][0])
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    if not args.queries_only:
        print_ingest(ing, batch, gil, bd, copied)
    print()
    head = f"query, project 1 ({inserted:,} rows)"
    print(f"{head:<42}{'p50 ms':>9}{'p95 ms':>9}{'base p50':>10}{'base p95':>10}{'base/idx':>10}")
    for p in pairs:
        i50, i95, r50, r95 = pct(p.indexed, 50), pct(p.indexed, 95), pct(p.raw, 50), pct(p.raw, 95)
        print(f"{p.label:<42}{i50:>9.1f}{i95:>9.1f}{r50:>10.1f}{r95:>10.1f}{r50 / i50:>10.1f}")
    print(f"  (n = {args.runs} runs, baselines {raw_runs}; base/idx = baseline p50 / p50)")
    for note in notes:
        print(f"  {note}")
    tr, hr = info["traces"], info.get("traces_hourly", {})
    print(
        f"traces: {tr['rows']:,} rows in {tr['parts']} parts, {tr['disk_bytes'] / 2**20:,.0f} MiB on disk "
        f"({tr['raw_bytes'] / 2**20:,.0f} MiB uncompressed); traces_hourly: {rollup_rows:,} rows in "
        f"{hr.get('parts', 0)} parts; chDB tracked memory {info['chdb_memory_tracked_mib']} MiB; "
        f"max RSS {maxrss:,.0f} MiB"
    )
    print(
        f"load average before {load_before}, before queries {load_q}, after {load_after}; nproc {os.cpu_count()}; "
        f"total {time.monotonic() - t_all:.0f} s"
    )

    bare = ing.rate("bare")
    results = [
        result(f"{m}_rows_per_s", ing.rate(m), "rows/s", bare, ing.rate(m) / bare)
        for m in ("writer", "writer_10k", "writer_fill")
        if m in ing.rows
    ]
    results.append(result("bare_insert_rows_per_s", bare, "rows/s", None, None))
    if copied[0]:
        results.append(result("chdb_copy_rows_per_s", copied[0] / copied[1], "rows/s", None, None))
    for p in pairs:
        for q in (50, 95):
            v, b = pct(p.indexed, q), pct(p.raw, q)
            results.append(result(f"{p.key}_p{q}_ms", v, "ms", b, v / b))
    print(
        "targets: "
        + ", ".join(
            f"{r['name']} {r['value']:,.1f} {r['unit']} {r['target_op']} {r['target']:,g}: "
            + ("met" if r["met"] else "MISSED")
            for r in results
            if r["target"] is not None
        )
    )
    table = {
        "rows": tr["rows"],
        "parts": tr["parts"],
        "disk_mib": round(tr["disk_bytes"] / 2**20, 1),
        "uncompressed_mib": round(tr["raw_bytes"] / 2**20, 1),
        "rollup_rows": rollup_rows,
        "max_rss_mib": round(maxrss, 1),
        "chdb_memory_tracked_mib": info["chdb_memory_tracked_mib"],
        "merge_wait_s": round(waited, 1),
        "ingest_wall_s": round(ingest_s, 1),
    }
    print(json.dumps({"name": "trace_ingest", "rows": inserted, "results": results, "table": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
