"""bench/routing_quality.py in its reduced mode (--quick: 35 intents; the story table), run as the
docs say, so the benchmark does not rot: its own fresh engine (a temporary var dir, never the test
database), the real clustering run, judge run, learner, router, pricing and gateway; checked for
the properties any working router has on this workload, not for the figures of a particular run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["bench/routing_quality.py", "--quick", "--tables", "story", "--chat", "30", "--http-prompts", "100"]


def run_quick(tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the bench's engine lives under tmp_path
    done = subprocess.run(
        [sys.executable, *QUICK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    assert "== outcome table `story`" in done.stdout and "POST /v1/route over HTTP" in done.stdout
    return result


def test_quick_routing_bench(tmp_path: Path) -> None:
    out = run_quick(tmp_path)
    assert out["bench"] == "routing_quality"
    assert out["data"]["held_out"] > 400 and out["data"]["clusters"] >= 10
    names = {f["name"] for f in out["figures"]}
    assert {
        "cost_reduction_at_95pct_quality_story",
        "apgr_story",
        "decision_p50_http",
        "decision_p99_in_process",
    } <= names

    assert set(out["results"]) == {"story"}
    for r in out["results"].values():
        singles = r["singles"]
        assert r["strongest"] == "frontier" and r["cheapest"] == "tiny"
        # a dearer model is more accurate on this workload's averages, as the tables say
        assert singles["frontier"]["accuracy"] > singles["general-mid"]["accuracy"] > singles["tiny"]["accuracy"]
        points = r["points"]
        assert len(points) > 60
        # λ trades quality for cost: each prompt's choice gets cheaper as λ grows, so the mean does
        costs = [p["usd_per_1k"] for p in points]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(costs))
        assert points[-1]["shares"]["frontier"] == 0.0 and points[0]["shares"]["frontier"] > 0.5
        for p in points:
            assert abs(sum(p["shares"].values()) - 1) < 1e-3
        # routing by cluster beats random routing at the same cost, and the oracle bounds everything
        assert r["apgr"] > r["apgr_random"] == 0.5
        assert r["apgr"] > r["apgr_best_single_mix"]
        oracle = r["oracle"]["accuracy"]
        assert oracle >= max(p["accuracy"] for p in points) and oracle >= singles["frontier"]["accuracy"]
        q = r["quality95"]
        assert q["router"] is not None and q["router"]["accuracy"] >= q["target_accuracy"]
        assert q["cost_reduction"] > q["random_cost_reduction"]

    # the gateway makes the decision the router makes in process, and prices it the same way
    http = out["http"]
    assert http["route_agrees_with_in_process"] == 1.0
    chat = http["chat"]
    assert chat["n"] == 30 and chat["traces"] == 30 and chat["answered_as_decided"] == 1.0
    assert chat["accuracy"] == chat["accuracy_expected"]
    assert chat["expected_usd"] > 0 and abs(chat["traced_usd"] - chat["expected_usd"]) <= 1e-6 * chat["expected_usd"]
    lat = out["latency"]["total"]
    assert lat["n"] == out["data"]["held_out"] and 0 < lat["p50_ms"] <= lat["p99_ms"]
