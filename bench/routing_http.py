"""bench/routing_quality.py through the real gateway: the engine's ASGI app served by uvicorn in
a thread of the bench's process (one process may open the chDB path), POST /v1/route timed over
HTTP, and routed chat completions answered by the fake candidates, checked against the in-process
decisions and the traces' cost."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from typing import Any

import numpy as np
from harness import loadavg
from routing_workload import ANSWER, MODELS, Prompt, model_name


def percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(np.mean(ms)), 3),
    }


class Server:
    """The engine's ASGI app served by uvicorn in a thread of this process (the tests' way: one
    process may open the chDB path)."""

    def __init__(self) -> None:
        import socket

        import uvicorn

        from opentracy_site.asgi import application

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-bench", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the engine did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def post(
    conn: http.client.HTTPConnection, key: str, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    conn.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = json.loads(r.read())
    return r.status, data, {k.lower(): v for k, v in r.getheaders()}


def http_route(port: int, key: str, texts: list[str]) -> dict[str, Any]:
    """POST /v1/route for each prompt (cache cleared: every prompt embedded), one keep-alive
    connection; client-side latency and the decision time the engine reports."""
    from routing import embedder

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, data, _ = post(conn, key, "/v1/route", {"model": "auto", "prompt": "warm up the route"})
    assert status == 200, data
    embedder.clear_cache()
    wall, reported, chosen = [], [], []
    for text in texts:
        t0 = time.perf_counter()
        status, data, _ = post(
            conn, key, "/v1/route", {"model": "auto", "messages": [{"role": "user", "content": text}]}
        )
        wall.append((time.perf_counter() - t0) * 1000)
        assert status == 200, data
        reported.append(float(data["decision_ms"]))
        chosen.append(data["model"])
    conn.close()
    return {"http": percentiles(wall), "engine_decision": percentiles(reported), "chosen": chosen}


def http_chat(port: int, key: str, prompts: list[Prompt]) -> dict[str, Any]:
    """Routed chat completions (model "auto") through the gateway: the model that answered, and
    whether its answer names the prompt's intent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answered, right = [], []
    for p in prompts:
        status, data, headers = post(
            conn, key, "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": p.text}]}
        )
        assert status == 200, data
        answered.append(headers.get("x-opentracy-route-model", ""))
        right.append(data["choices"][0]["message"]["content"] == ANSWER.format(p.intent))
    conn.close()
    return {"answered": answered, "correct": right}


def traced_cost(project: Any, n: int) -> tuple[int, float]:
    """(routed traces, their summed cost) as the trace writer priced them."""
    from opentracy_site import clickhouse
    from traces.writer import get_writer

    deadline = time.monotonic() + 30
    while True:
        get_writer().flush()
        _cols, rows = clickhouse.query(
            "SELECT count(), sum(ifNull(cost_total_usd, 0)) FROM traces"
            " WHERE project_id = {p:UInt64} AND route_policy = 'bench'",
            {"p": project.id},
        )
        count, usd = int(rows[0][0]), float(rows[0][1])
        if count >= n or time.monotonic() > deadline:
            return count, usd
        time.sleep(0.2)


def measure_http(
    fake: Any,
    project: Any,
    story: dict[str, Any],
    prompts: list[Prompt],
    tokens: list[int],
    correct: np.ndarray,
    cost: np.ndarray,
    n_chat: int,
    n_route: int,
    seed: int,
) -> dict[str, Any]:
    """Through the real gateway, with the story policy at its 95%-quality operating point (λ of the
    cheapest point reaching it, else the default 0.1): /v1/route latency over the first `n_route`
    held-out prompts (0: all), and a sample of held-out prompts sent as routed chat completions to
    the fake candidates."""
    from gateway.services import api_key_create
    from routing import embedder
    from routing.models import RoutingPolicy
    from routing.router import compile_policy, decide

    at = story["quality95"]["router"]
    policy = RoutingPolicy.objects.get(project=project, name=story["policy"])
    policy.lam = at["lam"] if at else 0.1
    policy.save()  # the routing cache drops the compiled policy (signal)
    compiled = compile_policy(policy)
    key = api_key_create(project=project, name="bench")[1]
    texts = [p.text for p in prompts]
    verdicts = {p.text: (p.intent, correct[i]) for i, p in enumerate(prompts)}
    for j, short in enumerate(MODELS):

        def answer(body: dict[str, Any], j: int = j) -> str:
            intent, row = verdicts[str(body["messages"][-1]["content"])]
            return ANSWER.format(intent if row[j] else "other")

        fake.scripts[f"scripted-{short}"] = [answer]
    sample = sorted(random.Random(seed).sample(range(len(prompts)), min(n_chat, len(prompts))))
    with Server() as server:
        load_before = loadavg()
        route = http_route(server.port, key, texts[: n_route or None])
        route["loadavg_before_after"] = [load_before, loadavg()]
        expected = [
            decide(compiled, embedder.embed(t), prompt_tokens=n).chosen for t, n in zip(texts, tokens, strict=True)
        ]
        chat = http_chat(server.port, key, [prompts[i] for i in sample])
        traced, traced_usd = traced_cost(project, len(sample))
    index = {model_name(s): j for j, s in enumerate(MODELS)}
    picked = [index.get(m, -1) for m in chat["answered"]]
    return {
        "lam": policy.lam,
        "route": {k: v for k, v in route.items() if k != "chosen"},
        "route_agrees_with_in_process": round(
            float(np.mean([a == b for a, b in zip(route["chosen"], expected, strict=False)])), 4
        ),
        "chat": {
            "n": len(sample),
            "answered_as_decided": round(
                float(np.mean([chat["answered"][k] == expected[i] for k, i in enumerate(sample)])), 4
            ),
            "accuracy": round(float(np.mean(chat["correct"])), 4),
            "accuracy_expected": round(float(np.mean([correct[i, j] for i, j in zip(sample, picked, strict=True)])), 4),
            "traces": traced,
            "traced_usd": round(traced_usd, 8),
            "expected_usd": round(float(sum(cost[i, j] for i, j in zip(sample, picked, strict=True))), 8),
        },
    }
