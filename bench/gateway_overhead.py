"""Gateway overhead: what `/v1/chat/completions` through the engine costs over calling the upstream
directly, with traces on (the default).

Run (from the repository root):

    .venv/bin/python bench/gateway_overhead.py            # full: 10 s per wrk run, 2000 TTFT pairs
    .venv/bin/python bench/gateway_overhead.py --quick    # 3 s per wrk run, 300 TTFT pairs
    .venv/bin/python bench/gateway_overhead.py --profile /tmp/gw   # also py-spy the engine at c=50

Needs `wrk` (Debian: `apt-get install -y wrk`) and, for --profile only, py-spy
(`.venv/bin/pip install py-spy`; a dev tool, not in requirements).

What it does, all on 127.0.0.1, every process cleaned up on exit, error or Ctrl-C:

1. Starts bench/fake_openai_upstream.py (raw asyncio Protocol + httptools on uvloop, pre-built
   replies; JSON for a plain request, a 7-event SSE stream with chunked encoding when the body
   has `"stream": true`). It is the `direct` baseline, so its own speed is measured every run.
2. Builds a private var dir (temp dir: SQLite + chDB + spool), runs `manage.py migrate`,
   `migrate_clickhouse`, `bootstrap`, `create_api_key --project default --name bench`, and starts
   the engine: `uvicorn opentracy_site.asgi:application --loop uvloop --http httptools
   --no-access-log --log-level warning --lifespan on` with OPENAI_BASE_URL pointing at the fake
   and OPENTRACY_LOCAL_MODEL_PRELOAD=false. Everything else is the default (traces on, embedded
   Celery worker on).
3. Non-streaming load with wrk and a Lua script POSTing
   `{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}` (same body and
   Authorization header to both), `--latency`, back to back in this order after a short warm-up of
   each: direct c=1, gateway c=1, direct c=50, gateway c=50.
   c=1 is `-t1 -c1`; c=50 is `-t1 -c50` by default: this box has 2 cores shared by wrk, the fake
   and the engine, and one wrk thread drives the fake alone at 70-145k req/s (25x the gateway), so
   a second wrk thread only takes CPU from the processes under test; measured, `--wrk-threads 2`
   gave the same gateway figure within noise and a lower direct one.
   Added latency = gateway p50/p99 - direct p50/p99 at c=1. Throughput = gateway req/s at c=50.
4. Streaming TTFT at c=1 with bench/sse_client.py (blocking keep-alive socket + httptools): time
   from writing the request to the first received bytes holding a `data:` event; direct and
   gateway requests alternate one by one (N pairs), so drift on a noisy machine hits both alike.
   Added TTFT p50/p99 = difference of the p50s/p99s.
5. Reads the engine's `GET /metrics` (opentracy_traces_submitted/written/spilled_total), waits for
   the writer to drain, and prints traces written against gateway requests answered (submitted is
   about 100 above answered: the requests still in flight when the two c=50 wrk runs stop, which
   the engine serves and traces but wrk does not count).
6. Prints a table, then one JSON line:
   {"name": "gateway_overhead", "results": [{"name", "value", "unit", "baseline", "ratio",
   "target", "target_op", "met"}, ...]}. For the latency rows `value` is the added ms, `baseline`
   the direct figure and `ratio` gateway/direct; for req/s `value` is the gateway's, `baseline` the
   direct one, `ratio` gateway/direct.

Also reported, from /proc: CPU time the engine used per request, and % of one core used by the
engine, by its main thread (the event loop: near 100% means the single loop, i.e. the GIL, is the
limit), and by the fake; and the load average before and after (other work on the box skews
figures: re-run when the load average before the run is well above 0). With --profile, per-thread
CPU over the profiled window too; summarise the profile with bench/profile_summary.py.

Experiments: `--engine-env NAME=VALUE` (repeatable) adds to the engine's environment, e.g. keep
the trace writer from inserting during the run (isolates what the batch insert costs):
    --engine-env OPENTRACY_TRACE_BATCH_SIZE=10000000 --engine-env OPENTRACY_TRACE_FLUSH_INTERVAL_S=3600
    --engine-env OPENTRACY_TRACE_QUEUE_SIZE=10000000
or time the engine's garbage collections (bench/gcprobe/sitecustomize.py, see its docstring):
    --engine-env PYTHONPATH=bench/gcprobe --engine-env OT_BENCH_GC_LOG=/tmp/gc --engine-env OT_BENCH_GC_FROM_S=3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    CLK_TCK,
    HOST,
    PATH,
    PY,
    Procs,
    WrkResult,
    engine_env,
    http_get,
    loadavg,
    run_wrk,
    set_up_engine,
    sigterm_as_interrupt,
    start_engine,
    start_fake,
    wrk_script,
)
from sse_client import Conn  # noqa: E402

BODY = b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY = b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"stream":true}'

TARGETS = {
    "added_p50_c1": (1.0, "<="),
    "added_p99_c1": (3.0, "<="),
    "added_ttft_p50_c1_stream": (1.0, "<="),
    "rps_c50": (2000.0, ">="),
}


# -- streaming TTFT -----------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def ttft_pairs(fake_port: int, engine_port: int, key: str, n: int, warmup: int) -> dict[str, Any]:
    direct, gateway = Conn(HOST, fake_port), Conn(HOST, engine_port)
    hdr = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    d_ttft: list[float] = []
    g_ttft: list[float] = []
    errors = 0
    try:
        for i in range(warmup + n):
            for conn, out in ((direct, d_ttft), (gateway, g_ttft)):
                rep = conn.post(PATH, STREAM_BODY, hdr)
                ok = rep.status == 200 and rep.ttft_s is not None and rep.body.rstrip().endswith(b"data: [DONE]")
                if not ok:
                    errors += 1
                    if errors <= 3:
                        print(f"  stream error: {rep.status} {rep.body[:300]!r}", file=sys.stderr)
                elif i >= warmup:
                    out.append(rep.ttft_s * 1000)  # type: ignore[operator]
    finally:
        direct.close()
        gateway.close()
    return {"direct": d_ttft, "gateway": g_ttft, "errors": errors, "gateway_requests": warmup + n}


# -- traces -------------------------------------------------------------------------------------
def trace_metrics(port: int) -> dict[str, float]:
    _status, text = http_get(port, "/metrics")
    return {m[1]: float(m[2]) for m in re.finditer(r"^opentracy_traces_(\w+?)(?:_total)? (\S+)$", text, re.M)}


def wait_drained(port: int, expected: int, timeout_s: float = 30.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    m = trace_metrics(port)
    while time.monotonic() < deadline:
        m = trace_metrics(port)
        if m.get("submitted", 0) >= expected and m.get("written", 0) + m.get("spilled", 0) >= m.get("submitted", 0):
            break
        time.sleep(0.5)
    return m


# -- profile ------------------------------------------------------------------------------------
def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed 'name (tid)', from /proc/<pid>/task."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            f = stat.rsplit(")", 1)[1].split()
            out[f"{name} ({task.name})"] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def profile_engine(
    engine_pid: int, engine_port: int, lua: Path, threads: int, seconds: float, out: Path, gil: bool
) -> Path:
    """py-spy the engine under wrk c=50, and print each thread's real CPU share over the window:
    py-spy counts a thread blocked in C (a queue wait, a sleep in a C call) as busy, /proc does not."""
    pyspy = shutil.which("py-spy") or shutil.which(str(Path(PY).parent / "py-spy"))
    if not pyspy:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    raw = Path(f"{out}.raw.txt")
    cmd = [pyspy, "record", "--pid", str(engine_pid), "--duration", f"{int(seconds)}", "--rate", "250"]
    cmd += ["--format", "raw", "--threads", *(["--gil"] if gil else []), "-o", str(raw)]
    print(f"  profiling: {' '.join(cmd)}  (under wrk -t{threads} -c50)")
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    cpu0, t0 = thread_cpu(engine_pid), time.monotonic()
    res = run_wrk("gateway c=50 (profiled)", engine_port, lua, threads, 50, seconds)
    cpu1, wall = thread_cpu(engine_pid), time.monotonic() - t0
    _o, err = spy.communicate(timeout=60)
    if spy.returncode != 0:
        print(f"  py-spy failed: {err.decode()[-2000:]}", file=sys.stderr)
    print(f"  profiled run: {res.rps:.0f} req/s (py-spy slows the engine); engine threads, % of one core:")
    # Python thread names (py-spy knows them) for the OS thread ids
    names = dict(re.findall(r"^thread \((\d+)\): ([^;]*);", raw.read_text(), re.M)) if raw.exists() else {}
    used = {name: c - cpu0.get(name, 0.0) for name, c in cpu1.items()}
    for name, u in sorted(used.items(), key=lambda kv: -kv[1]):
        tid = name.rsplit("(", 1)[1].rstrip(")")
        if u > 0 and 100 * u / wall >= 0.5:
            print(f"    {name:<28}{names.get(tid, ''):<26}{100 * u / wall:6.1f}%")
    return raw


# -- report -------------------------------------------------------------------------------------
def result(name: str, value: float, unit: str, baseline: float, ratio: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "ratio": None if ratio is None else round(ratio, 3),
    }
    if name in TARGETS:
        target, op = TARGETS[name]
        row.update(target=target, target_op=op, met=bool(value <= target if op == "<=" else value >= target))
    else:
        row.update(target=None, target_op=None, met=None)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per wrk run, 300 TTFT pairs")
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 10, 3 with --quick)")
    ap.add_argument("--ttft-n", type=int, help="streaming request pairs (default 2000, 300 with --quick)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads for c=50 (default 1, see docstring)")
    ap.add_argument("--profile", type=Path, help="also record the engine with py-spy under c=50 into PREFIX.raw.txt")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, var dir)")
    ap.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the engine, for experiments (e.g. OPENTRACY_TRACE_BATCH_SIZE=100); repeatable",
    )
    args = ap.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    ttft_n = args.ttft_n or (300 if args.quick else 2000)
    warm_s = 1.0 if args.quick else 2.0

    if not shutil.which("wrk"):
        print(
            "wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu) or build it from "
            "https://github.com/wg/wrk",
            file=sys.stderr,
        )
        return 2

    signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="ot-bench-gw-"))
    load_before = loadavg()
    try:
        fake, fake_port = start_fake(procs, tmp)
        env = engine_env(tmp / "var", fake_port)
        env.update(kv.split("=", 1) for kv in args.engine_env)
        if args.engine_env:
            print(f"engine env overrides: {' '.join(args.engine_env)}")
        t = time.monotonic()
        key = set_up_engine(env)
        engine, engine_port = start_engine(procs, env, tmp)
        print(
            f"fake upstream :{fake_port} (pid {fake.pid}); engine :{engine_port} (pid {engine.pid}), "
            f"set-up {time.monotonic() - t:.1f} s; var dir {tmp / 'var'}; load avg {load_before}"
        )

        lua_direct, lua_gw = wrk_script(tmp, BODY, None), None
        (tmp / "gw").mkdir()
        lua_gw = wrk_script(tmp / "gw", BODY, key)
        pids = {"engine": engine.pid, "loop": -engine.pid, "fake": fake.pid}

        # warm-up: key cache, aiohttp pool (50 upstream connections), chDB first insert
        print(f"warming up ({warm_s:g} s each)...")
        warm = [
            run_wrk("warm direct", fake_port, lua_direct, args.wrk_threads, 50, warm_s),
            run_wrk("warm gateway", engine_port, lua_gw, args.wrk_threads, 50, warm_s),
        ]
        gw_sent = warm[1].requests

        runs: dict[str, WrkResult] = {}
        for label, port, lua, t_, c in (
            ("direct c=1", fake_port, lua_direct, 1, 1),
            ("gateway c=1", engine_port, lua_gw, 1, 1),
            ("direct c=50", fake_port, lua_direct, args.wrk_threads, 50),
            ("gateway c=50", engine_port, lua_gw, args.wrk_threads, 50),
        ):
            print(f"wrk {label} ({duration:g} s)...")
            runs[label] = run_wrk(label, port, lua, t_, c, duration, pids)
            if label.startswith("gateway"):
                gw_sent += runs[label].requests

        print(f"streaming TTFT: {ttft_n} direct/gateway pairs (alternating)...")
        tt = ttft_pairs(fake_port, engine_port, key, ttft_n, warmup=50)
        gw_sent += tt["gateway_requests"]

        m = wait_drained(engine_port, gw_sent)
        load_after = loadavg()

        raw_profile = None
        if args.profile:
            raw_profile = profile_engine(
                engine.pid, engine_port, lua_gw, args.wrk_threads, args.profile_seconds, args.profile, args.profile_gil
            )

        procs.stop(engine)
        engine_log = (tmp / "engine.log").read_text(errors="replace")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping processes", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    d1, g1, d50, g50 = runs["direct c=1"], runs["gateway c=1"], runs["direct c=50"], runs["gateway c=50"]
    dt, gt = tt["direct"], tt["gateway"]
    dt50, gt50, dt99, gt99 = pct(dt, 50), pct(gt, 50), pct(dt, 99), pct(gt, 99)
    errors = sum(r.errors for r in runs.values()) + sum(r.errors for r in warm) + tt["errors"]

    print()
    print(
        f"{'run':<16}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}"
        f"{'engine CPU ms/req':>19}{'engine %core':>13}{'loop %core':>11}{'fake %core':>11}"
    )
    for r in runs.values():
        ce = f"{r.cpu_ms_per_req.get('engine', 0):.3f}"
        cores = "".join(f"{r.core_pct.get(n, 0):>{w}.0f}" for n, w in (("engine", 13), ("loop", 11), ("fake", 11)))
        print(
            f"{r.label:<16}{r.rps:>10.0f}{r.p50_ms:>10.3f}{r.p90_ms:>10.3f}{r.p99_ms:>10.3f}{r.requests:>10}"
            f"{r.errors:>8}{ce:>19}{cores}"
        )
    print("  (%core: CPU time / wall time of the run; loop = the engine's main thread, which runs the event loop)")
    print(f"{'stream TTFT':<16}{'direct':>10}{'gateway':>10}{'added':>10}   (ms, c=1, n={len(gt)})")
    for q, d, g in (("p50", dt50, gt50), ("p90", pct(dt, 90), pct(gt, 90)), ("p99", dt99, gt99)):
        print(f"  {q:<14}{d:>10.3f}{g:>10.3f}{g - d:>10.3f}")
    print(
        f"traces: submitted {m.get('submitted', 0):.0f}, written {m.get('written', 0):.0f}, "
        f"spilled {m.get('spilled', 0):.0f}, queue_full {m.get('queue_full', 0):.0f}, "
        f"write_errors {m.get('write_errors', 0):.0f}; gateway requests answered {gw_sent}"
    )
    print(f"load average before {load_before}, after {load_after}; nproc {os.cpu_count()}")
    if errors:
        print(f"WARNING: {errors} failed requests (non-2xx, socket errors or bad streams)")
    warn = [ln for ln in engine_log.splitlines() if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]
    if warn:
        print(f"engine log: {len(warn)} warning/error lines, first: {warn[0][:200]}")

    results = [
        result("added_p50_c1", g1.p50_ms - d1.p50_ms, "ms", d1.p50_ms, g1.p50_ms / d1.p50_ms),
        result("added_p99_c1", g1.p99_ms - d1.p99_ms, "ms", d1.p99_ms, g1.p99_ms / d1.p99_ms),
        result("added_ttft_p50_c1_stream", gt50 - dt50, "ms", dt50, gt50 / dt50),
        result("added_ttft_p99_c1_stream", gt99 - dt99, "ms", dt99, gt99 / dt99),
        result("rps_c50", g50.rps, "req/s", d50.rps, g50.rps / d50.rps),
        result("rps_c1", g1.rps, "req/s", d1.rps, g1.rps / d1.rps),
        result("engine_cpu_ms_per_req_c50", g50.cpu_ms_per_req["engine"], "ms", d50.cpu_ms_per_req["fake"], None),
        result("engine_loop_thread_core_pct_c50", g50.core_pct["loop"], "%", 100.0, g50.core_pct["loop"] / 100),
        result("traces_written", m.get("written", 0), "traces", float(gw_sent), m.get("written", 0) / max(gw_sent, 1)),
    ]
    print(
        "targets: "
        + ", ".join(
            f"{r['name']} {r['value']:.3f} {r['unit']} {r['target_op']} {r['target']:g}: "
            f"{'met' if r['met'] else 'MISSED'}"
            for r in results
            if r["target"] is not None
        )
    )
    if raw_profile is not None:
        print(
            f"profile (raw collapsed stacks): {raw_profile}; summarise with "
            f".venv/bin/python bench/profile_summary.py {raw_profile}"
        )
    print(json.dumps({"name": "gateway_overhead", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
