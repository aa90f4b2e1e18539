"""Experiment probe, not part of the engine: times every garbage collection in a process.

Enabled only when OT_BENCH_GC_LOG is set, by putting this folder on PYTHONPATH, e.g.

    .venv/bin/python bench/gateway_overhead.py --quick \\
        --engine-env PYTHONPATH=bench/gcprobe --engine-env OT_BENCH_GC_LOG=/tmp/gc

Each process writes <OT_BENCH_GC_LOG>.<pid>.json every 2 s and at exit (uvicorn re-raises SIGTERM
after its graceful shutdown, so atexit alone is not enough): per generation, the number of
collections and the total / max / p99 pause in ms.

Experiment knobs (what an engine change could do, tried without editing the engine):
OT_BENCH_GC_FROM_S=N counts only collections after N seconds (start-up excluded), and with
OT_BENCH_GC_FREEZE=1 calls gc.freeze() at that moment (so the start-up heap leaves the collector's
generations, as an engine could do at the end of its lifespan start-up); OT_BENCH_GC_THRESHOLD=a,b,c
calls gc.set_threshold(a, b, c) at start; OT_BENCH_GC_TYPES=1 (with OT_BENCH_GC_FROM_S) keeps what the
collector finds (gc.DEBUG_SAVEALL) and reports the most common types of cyclic garbage, i.e. what
creates reference cycles per request (this changes the pauses: use it only to find the types).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import threading
import time
from collections import Counter

_PREFIX = os.environ.get("OT_BENCH_GC_LOG")

if _PREFIX:
    _pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    _collected = {0: 0, 1: 0, 2: 0}
    _types: Counter[str] = Counter()
    _lock = threading.Lock()
    _start = [0.0]

    def _cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            _pauses[info["generation"]].append((time.perf_counter() - _start[0]) * 1000)
            _collected[info["generation"]] += info["collected"]

    gc.callbacks.append(_cb)

    def _dump() -> None:
        out: dict[str, object] = {"pid": os.getpid(), "frozen": gc.get_freeze_count(), "generations": {}}
        with _lock:
            if gc.garbage:
                _types.update(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
                gc.garbage.clear()
            if _types:
                out["garbage_types"] = dict(_types.most_common(25))
        for g, xs in _pauses.items():
            s = sorted(xs)
            out["generations"][str(g)] = {  # type: ignore[index]
                "count": len(s),
                "total_ms": round(sum(s), 2),
                "max_ms": round(s[-1], 3) if s else 0.0,
                "p99_ms": round(s[int(0.99 * (len(s) - 1))], 3) if s else 0.0,
                "collected": _collected[g],
            }
        with open(f"{_PREFIX}.{os.getpid()}.json", "w") as f:
            json.dump(out, f)

    def _every(seconds: float) -> None:
        while True:
            time.sleep(0.2 if os.environ.get("OT_BENCH_GC_TYPES") == "1" else seconds)
            _dump()

    _threshold = os.environ.get("OT_BENCH_GC_THRESHOLD")
    if _threshold:
        gc.set_threshold(*(int(x) for x in _threshold.split(",")))

    def _from_now() -> None:
        if os.environ.get("OT_BENCH_GC_FREEZE") == "1":
            gc.freeze()
        for g in _pauses:
            _pauses[g].clear()
            _collected[g] = 0
        if os.environ.get("OT_BENCH_GC_TYPES") == "1":
            gc.set_debug(gc.DEBUG_SAVEALL)

    _from_s = os.environ.get("OT_BENCH_GC_FROM_S")
    if _from_s:
        threading.Timer(float(_from_s), _from_now).start()

    atexit.register(_dump)
    threading.Thread(target=_every, args=(2.0,), name="gc-probe", daemon=True).start()
