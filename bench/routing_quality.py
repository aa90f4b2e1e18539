"""Routing quality: the cost–quality curve of the router on real prompts, against every single
model, random routing and the oracle, in one run; and the decision's latency.

Run (from the repository root; the machine is shared, so nice it):

    nice -n 15 .venv/bin/python bench/routing_quality.py            # CLINC150 + Banking77 test splits (~5 min)
    nice -n 15 .venv/bin/python bench/routing_quality.py --quick    # smoke run (~45 s): 35 intents, PCA
                                                                    # reduction (UMAP's JIT alone is ~25 s)
    options: --seed S --train-fraction F --judged-fraction F --rho R --reduction umap|pca|none
             --tables story,harsh --chat N --http-prompts N --no-http

The workload. A neobank's assistant: customers ask about their accounts and cards and about
everyday things. Prompts are the real, human-written test splits of CLINC150 (4,500 prompts, 150
intents in 10 domains) and Banking77 (3,080, 77 fine-grained banking intents, counted as an 11th
"domain", banking77). The task of a candidate is to name the request's intent; whether it does is
the outcome. The outcomes are SYNTHETIC: they come from the accuracy table below, not from real
models. The prompts, the clustering, the profile, the decision and the pricing are the product's.

The candidates (fake models on the tests' fake OpenAI upstream, `openai/scripted-*`, priced by
ModelPrice rows in USD per million input / output tokens):

    frontier     2.50 / 10.00   a dear generalist (GPT-4o class): strong everywhere, weakest on
                                Banking77's 77 confusable intents
    fin-mid      0.40 / 1.60    a mid-size model fine-tuned on financial support tickets: close to
                                the frontier on banking, cards and Banking77, mediocre elsewhere,
                                poor at chit-chat
    general-mid  0.30 / 1.20    a general mid-size chat model: close to the frontier on everyday
                                domains, weak on fine-grained banking
    small        0.10 / 0.40    a small chat model: good at chit-chat, meta and simple utility
                                requests (time, weather, maths), poor on anything specialised
    tiny         0.02 / 0.04    a ~1B model on cheap hosting: only chit-chat, meta and utility

Accuracy (%) per domain, the "story" table (written before the first run, not tuned after):

    domain               frontier  fin-mid  general-mid  small  tiny
    banking                 95        94        82         65    45
    credit_cards            95        94        82         65    45
    banking77               90        88        65         40    20
    kitchen_and_dining      95        80        93         80    55
    home                    95        80        93         85    60
    auto_and_commute        95        80        93         75    50
    travel                  95        80        93         75    50
    utility                 96        82        94         88    75
    work                    95        80        93         75    50
    small_talk              97        75        92         93    85
    meta                    96        75        90         90    80

The "harsh" table, run beside it as a sensitivity check: the same with every cheaper model 5
points lower everywhere (no cheaper model within 5 points of the frontier on any domain).

Per-prompt outcomes: model m answers prompt i correctly iff ρ·z_i + √(1−ρ²)·e_im < Φ⁻¹(acc[d(i), m])
with z_i, e_im standard normal (seeded): each model's accuracy on a domain is its table entry, and
errors are correlated across models (ρ = 0.5: a hard prompt is hard for every model).

The pipeline, through the real components:
1. A fresh embedded engine (SQLite + chDB in a temporary OPENTRACY_VAR_DIR), a project, the fake
   upstream as its OpenAI provider, a ModelPrice per candidate.
2. Split: 50% of each intent's prompts for training, the rest held out (seeded).
3. Clusters: one trace per training prompt through the trace writer, then a clustering run of
   them executed as the Celery task executes it (datasets.runs.run_execute: embed, UMAP (PCA with
   --quick) + HDBSCAN, keyword names, save clusters and assignments).
4. Profile: every candidate's answer to every training prompt ("Intent: <label>" when its outcome
   says right, "Intent: other" when wrong) is imported as a dataset row with the candidate as its
   model and the right answer as its reference; an `exact` judge run over them is executed by its
   Celery task's code; routing.learning.learn(policy) turns the verdicts into `traces` cells (each
   row in its prompt's most likely cluster). A full profile of the training half, as a profile
   run or weeks of judged traffic would give; --judged-fraction F judges a seeded share only.
5. Routing: a RoutingPolicy over the run's clusters with the five candidates (defaults for
   temperature and shrinkage; expected output tokens = the answers' length), compiled by
   routing.router.compile_policy; each held-out prompt is embedded by routing.embedder and routed
   by routing.router.decide at each λ of routing.router.LAMBDAS and a finer grid. A routed prompt
   is correct iff the chosen model's outcome is; its cost is the engine's price of that model for
   the prompt's usage (traces.cost.compute_cost with the ModelPrice rows; usage as the fake
   upstream counts it: words of the prompt, words of the answer "Intent: <label>").

Figures, all on the held-out prompts, measured in this run:
- each single model's accuracy and cost (USD per 1k requests); the router's curve (λ sweep) with
  the share of each model and the error routing.router.curve predicted for the same λ;
- random routing at matched cost: each request goes to the strongest (dearest) model with
  probability p, else to the cheapest, p chosen to match the router point's cost (expected value);
  and the best prompt-blind mix of single models (the upper hull of the single-model points);
- the oracle: the cheapest model that answers correctly, else the cheapest model;
- PGR(x) = (acc − acc_cheapest) / (acc_strongest − acc_cheapest) at normalised cost
  x = (cost − cost_cheapest) / (cost_strongest − cost_cheapest). APGR = ∫₀¹ PGR dx over the upper
  concave hull of the router's measured points plus the two end models (a mix of two λ settings
  at random reaches any point of the segment between them). Random routing has APGR 0.5. This is
  RouteLLM's APGR with the share of calls to the strong model replaced by normalised cost, since
  here there are five models, not two;
- CPT(95%) (RouteLLM): the smallest share of requests sent to the strongest model among measured
  router points with PGR ≥ 95%;
- cost reduction at 95% quality: 1 − cost / cost_strongest at the cheapest measured router point
  whose accuracy is at least 95% of the strongest model's. Goal: ≥ 85%.

Decision latency: every held-out prompt (distinct texts) embedded and decided in process with the
embedder's cache cleared first (embedding + decide, p50 / p99); and POST /v1/route over HTTP
against the real ASGI app (uvicorn in a thread of this process, a keep-alive client here), over
the same prompts (200 with --quick). Goal: p50 ≤ 5 ms, p99 ≤ 20 ms including the embedding. Also
through the gateway: a sample of held-out prompts (--chat, 300) sent as routed chat completions
(model "auto", the story policy at its 95%-quality λ) to the fake candidates, each scripted to
answer by its outcome: the answering model must be the in-process decision, and the traces' cost
the computed one.

Modules: bench/routing_workload.py (prompts, candidates, tables, outcomes), bench/routing_metrics.py
(the sweep and the figures), bench/routing_http.py (the gateway part). Ends with one JSON line.
Results: docs/benchmarks.md, "Routing quality".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import loadavg  # noqa: E402
from routing_http import measure_http, percentiles  # noqa: E402
from routing_metrics import evaluate  # noqa: E402
from routing_workload import (  # noqa: E402
    ANSWER,
    ANSWER_TOKENS,
    MODELS,
    PRICES,
    TABLES,
    Prompt,
    load_pool,
    model_name,
    outcomes,
    split,
)

GOAL_REDUCTION = 0.85
GOAL_P50_MS, GOAL_P99_MS = 5.0, 20.0


# ---------------------------------------------------------------- engine


def engine() -> None:
    """A fresh embedded engine in a temporary directory: SQLite and chDB, migrated (whatever the
    environment names: the bench never writes into a configured database)."""
    for name in ("DATABASE_URL", "CLICKHOUSE_URL", "REDIS_URL", "OPENTRACY_TRACE_SPOOL_DIR"):
        os.environ.pop(name, None)
    os.environ["OPENTRACY_VAR_DIR"] = tempfile.mkdtemp(prefix="routing-bench-")
    models = ROOT / "var" / "models"
    if models.is_dir():  # the ONNX export of MiniLM already made: no 2 s export
        os.environ.setdefault("OPENTRACY_LOCAL_MODEL_DIR", str(models))
    os.environ.setdefault("OPENTRACY_LOCAL_MODEL_PRELOAD", "false")
    os.environ["OPENTRACY_EMBEDDED_BEAT"] = "false"  # no periodic re-learning while latency is measured
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from traces.migrations_ch import apply_migrations

    call_command("migrate", verbosity=0)
    apply_migrations()


def project_with_candidates(fake_url: str) -> Any:
    """The project, the fake upstream as its OpenAI provider, and a price for each candidate."""
    from decimal import Decimal

    from gateway.models import ModelPrice
    from gateway.services import credential_set, project_create
    from tests.fakes.openai_upstream import API_KEY
    from traces import cost

    project = project_create(slug="routing-bench")
    credential_set(project=project, provider="openai", api_key=API_KEY, base_url=f"{fake_url}/v1")
    for short, (inp, out) in PRICES.items():
        ModelPrice.objects.create(
            project=project,
            model=model_name(short),
            input_per_mtok=Decimal(str(inp)),
            output_per_mtok=Decimal(str(out)),
        )
    cost.invalidate_overrides()
    return project


def write_traces(project: Any, texts: list[str]) -> list[str]:
    """One trace per training prompt (as the traffic that was clustered); returns the ids."""
    from traces.writer import get_writer

    writer, now, ids = get_writer(), time.time(), []
    for i, text in enumerate(texts):
        trace_id = str(uuid.uuid4())
        ids.append(trace_id)
        writer.submit(
            {
                "trace_id": trace_id,
                "project_id": project.id,
                "timestamp": now - i * 0.001,
                "api_key_id": 1,
                "requested_model": model_name("frontier"),
                "resolved_model": model_name("frontier"),
                "provider": "openai",
                "request_messages": json.dumps([{"role": "user", "content": text}]),
                "response_message": json.dumps({"role": "assistant", "content": "ok"}),
                "prompt_tokens": len(text.split()),
                "completion_tokens": ANSWER_TOKENS,
                "latency_ms": 100.0,
                "cost_total_usd": 0.0,
            }
        )
    writer.flush()
    return ids


def cluster_run(project: Any, reduction: str) -> tuple[Any, float]:
    """A clustering run of the project's traces, executed as the Celery task does; returns the run
    and its seconds."""
    from datasets.runs import run_create, run_execute

    params = {"namer": "", "max_traces": 100_000, "reduction": reduction}
    queued = run_create(project=project, user=None, filters={}, params=params)
    t = time.perf_counter()
    run = run_execute(run_id=queued.pk)
    seconds = time.perf_counter() - t
    assert run is not None and run.status == "done", (run and run.status, run and run.message)
    return run, seconds


def judge_and_learn(project: Any, policy: Any, prompts: list[Prompt], correct: np.ndarray) -> dict[str, Any]:
    """Ψ through the product: each candidate's answer to each training prompt imported as a dataset
    row (the candidate as its model, the right answer as its reference), an `exact` judge run over
    them executed by its Celery task, then routing.learning.learn(policy) (verdicts → cells).
    Returns the judge's and the learner's counts; the dataset is left for the caller to delete."""
    from datasets import curation
    from datasets.judge import judge_run_create
    from datasets.tasks import judge_run
    from routing import learning

    lines = [
        json.dumps(
            {
                "prompt": p.text,
                "response": ANSWER.format(p.intent if row[j] else "other"),
                "reference": ANSWER.format(p.intent),
                "model": model_name(short),
            }
        )
        for p, row in zip(prompts, correct, strict=True)
        for j, short in enumerate(MODELS)
    ]
    t = time.perf_counter()
    dataset = curation.dataset_import_jsonl(
        project=project, name=f"answers for {policy.name}", file="\n".join(lines).encode()
    )
    judged = judge_run_create(version=curation.open_version(dataset=dataset), kind="exact")
    status = judge_run(judged.pk)  # the task's own code, here rather than on a worker
    judged.refresh_from_db()
    assert status == "done", judged.message
    judge_s = time.perf_counter() - t
    t = time.perf_counter()
    learned = learning.learn(policy)
    return {
        "dataset": dataset.pk,
        "rows": len(lines),
        "judge": judged.message,
        "judge_s": round(judge_s, 1),
        "learned": learned,
        "learn_s": round(time.perf_counter() - t, 1),
    }


def prices_of(project: Any, prompts: list[Prompt]) -> np.ndarray:
    """(n, M) USD of each candidate answering each prompt, by the engine's pricing (ModelPrice)."""
    from traces.cost import compute_cost

    out = np.zeros((len(prompts), len(MODELS)))
    for i, p in enumerate(prompts):
        words = len(p.text.split())
        for j, short in enumerate(MODELS):
            total = compute_cost(
                project_id=project.id,
                provider="openai",
                model=f"scripted-{short}",
                prompt=words,
                completion=ANSWER_TOKENS,
                cached=0,
            )[2]
            assert total is not None, f"no price for {short}"
            out[i, j] = total
    return out


# ---------------------------------------------------------------- latency


def decide_in_process(compiled: Any, texts: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Embed (cache cleared: every distinct prompt is computed) and decide each prompt, timed.
    Returns the embeddings, for the sweep, and the latency figures."""
    from routing import embedder
    from routing.router import decide

    embedder.embed("warm the session up once")
    embedder.clear_cache()
    total, embed_ms, decide_ms, out = [], [], [], []
    for text in texts:
        t0 = time.perf_counter()
        emb = embedder.embed(text)
        t1 = time.perf_counter()
        decide(compiled, emb)
        t2 = time.perf_counter()
        out.append(emb)
        total.append((t2 - t0) * 1000)
        embed_ms.append((t1 - t0) * 1000)
        decide_ms.append((t2 - t1) * 1000)
    return out, {"total": percentiles(total), "embed": percentiles(embed_ms), "decide": percentiles(decide_ms)}


# ---------------------------------------------------------------- main


def request_tokens(text: str) -> int:
    """The whole request's size as the gateway estimates it (routing/gateway.py), so in-process
    decisions are the ones the gateway makes."""
    from routing.gateway import estimate_tokens

    return estimate_tokens({"messages": [{"role": "user", "content": text}]})


def print_table(name: str, r: dict[str, Any]) -> None:
    print(f"\n== outcome table `{name}`: {r['n_held_out']} held-out prompts ==")
    print(f"{'':<22} {'accuracy':>8} {'$/1k req':>9}")
    for s, v in r["singles"].items():
        print(f"{'model ' + s:<22} {v['accuracy']:>8.4f} {v['usd_per_1k']:>9.4f}")
    print(f"{'oracle':<22} {r['oracle']['accuracy']:>8.4f} {r['oracle']['usd_per_1k']:>9.4f}")
    shares = " ".join(f"{s[:5]:>5}" for s in MODELS)
    print(f"\n{'λ':>7} {'acc':>7} {'$/1k':>8} {'PGR':>6} {'pred':>6} {'random':>7} {'mix':>7}  share: {shares}")
    for p in r["points"]:
        if not p["in_lambdas"]:
            continue
        sh = " ".join(f"{100 * p['shares'][s]:>5.1f}" for s in MODELS)
        print(
            f"{p['lam']:>7g} {p['accuracy']:>7.4f} {p['usd_per_1k']:>8.4f} {p['pgr']:>6.3f}"
            f" {p['predicted_accuracy']:>6.3f} {p['random_accuracy']:>7.4f} {p['best_mix_accuracy']:>7.4f}         {sh}"
        )
    q = r["quality95"]
    at = q["router"]
    print(
        f"APGR {r['apgr']:.3f} (best single-model mix {r['apgr_best_single_mix']:.3f}, random 0.5,"
        f" oracle {r['apgr_oracle']:.3f}); CPT(95%) {r['cpt95_share_strongest']}"
    )
    print(
        f"95% of {r['strongest']}'s accuracy = {q['target_accuracy']}: router "
        + (f"λ={at['lam']} acc {at['accuracy']} at ${at['usd_per_1k']}/1k" if at else "never")
        + f" -> cost reduction {q['cost_reduction']} (best single-model mix {q['best_single_mix_cost_reduction']},"
        f" random {q['random_cost_reduction']}, oracle {q['oracle_cost_reduction']}); goal >= {GOAL_REDUCTION}"
    )
    if q["by_domain"]:
        print(f"at that point, by domain: {'n':>5} {'acc':>6} {'strongest':>9}  share: {shares}")
        for d, v in q["by_domain"].items():
            sh = " ".join(f"{100 * v['shares'][s]:>5.1f}" for s in MODELS)
            print(f"  {d:<22} {v['n']:>5} {v['accuracy']:>6.3f} {v['strongest_accuracy']:>9.3f}         {sh}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="35 intents: a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-fraction", type=float, default=0.5)
    ap.add_argument("--rho", type=float, default=0.5, help="correlation of the models' errors on a prompt")
    ap.add_argument("--chat", type=int, default=300, help="held-out prompts also sent through /v1/chat/completions")
    ap.add_argument(
        "--reduction", choices=("umap", "pca", "none"), help="the clustering run's (default umap; pca with --quick)"
    )
    ap.add_argument("--http-prompts", type=int, help="prompts timed through POST /v1/route (default all; 200 quick)")
    ap.add_argument(
        "--judged-fraction", type=float, default=1.0, help="share of the training prompts judged for the profile"
    )
    ap.add_argument("--tables", default="story,harsh", help="outcome tables to run (story is needed for HTTP)")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    args = ap.parse_args()
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    if unknown := set(tables) - set(TABLES):
        raise SystemExit(f"unknown table(s) {sorted(unknown)}: use {', '.join(TABLES)}")
    if "story" not in tables:
        args.no_http = True
    if not 0 < args.judged_fraction <= 1:
        raise SystemExit("--judged-fraction must be in (0, 1]")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    pool = load_pool(args.quick, args.seed)
    train, held = split(pool, args.train_fraction, args.seed)
    engine()
    from datasets.models import Dataset
    from routing.models import RoutingPolicy
    from routing.router import compile_policy
    from tests.fakes.openai_upstream import FakeOpenAI

    fake = FakeOpenAI()
    fake.start()
    try:
        project = project_with_candidates(fake.base_url)
        train_texts = [pool[i].text for i in train]
        write_traces(project, train_texts)
        # the training prompts whose answers are judged (all by default), a seeded sample
        judged = sorted(random.Random(args.seed).sample(train, round(len(train) * args.judged_fraction)))
        phases["engine_and_traces"] = round(time.perf_counter() - started, 1)
        run, cluster_s = cluster_run(project, args.reduction or ("pca" if args.quick else "umap"))
        phases["clustering_run"] = round(cluster_s, 1)
        held_prompts = [pool[i] for i in held]
        texts = [p.text for p in held_prompts]
        tokens = [request_tokens(t) for t in texts]
        cost = prices_of(project, held_prompts)
        print(
            f"{len(pool)} prompts ({len({p.intent for p in pool})} intents, {len({p.domain for p in pool})} domains):"
            f" {len(train)} train ({len(judged)} judged), {len(held)} held out;"
            f" clustering run: {run.message} ({cluster_s:.1f} s)",
            flush=True,
        )
        results: dict[str, Any] = {}
        latency: dict[str, Any] = {}
        correct_of: dict[str, np.ndarray] = {}
        # the story last: its policy is the default one the HTTP part routes with, and its verdicts
        # the only ones left (the learner reads every verdict of the project)
        for name in [t for t in ("harsh", "story") if t in tables]:
            correct = outcomes(pool, TABLES[name], args.rho, args.seed)
            correct_of[name] = correct
            policy = RoutingPolicy.objects.create(
                project=project,
                name="bench" if name == "story" else f"bench-{name}",
                is_default=name == "story",
                candidates=[model_name(s) for s in MODELS],
                clustering_run=run,
                expected_output_tokens=ANSWER_TOKENS,
            )
            learned = judge_and_learn(project, policy, [pool[i] for i in judged], correct[judged])
            if name != "story":
                Dataset.objects.filter(pk=learned["dataset"]).delete()
            phases[f"judge_{name}"], phases[f"learn_{name}"] = learned["judge_s"], learned["learn_s"]
            compiled = compile_policy(policy)
            if not latency:
                load_before = loadavg()
                embedded, latency = decide_in_process(compiled, texts)
                latency["loadavg_before_after"] = [load_before, loadavg()]
            t = time.perf_counter()
            r = evaluate(compiled, embedded, tokens, [p.domain for p in held_prompts], correct[held], cost)
            r.update(
                policy=policy.name,
                profile=learned,
                clusters=len(compiled.cluster_keys),
                sweep_s=round(time.perf_counter() - t, 1),
            )
            results[name] = r
            phases[f"sweep_{name}"] = r["sweep_s"]
        for name in tables:
            print_table(name, results[name])
        lat = latency["total"]
        print(
            f"\ndecision in process (embedding + decide, cache cleared, {lat['n']} distinct prompts):"
            f" p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms (embedding alone p50 {latency['embed']['p50_ms']},"
            f" decide alone p50 {latency['decide']['p50_ms']}); goal p50 <= {GOAL_P50_MS}, p99 <= {GOAL_P99_MS};"
            f" load average before / after {' / '.join(latency['loadavg_before_after'])}",
            flush=True,
        )
        http: dict[str, Any] | None = None
        if not args.no_http:
            t = time.perf_counter()
            http = measure_http(
                fake,
                project,
                results["story"],
                held_prompts,
                tokens,
                correct_of["story"][held],
                cost,
                args.chat,
                args.http_prompts if args.http_prompts is not None else (200 if args.quick else 0),
                args.seed,
            )
            h = http["route"]
            print(
                f"POST /v1/route over HTTP ({h['http']['n']} prompts, cache cleared): p50 {h['http']['p50_ms']} ms,"
                f" p99 {h['http']['p99_ms']} ms (the engine's decision_ms p50 {h['engine_decision']['p50_ms']},"
                f" p99 {h['engine_decision']['p99_ms']}); same choice as in process:"
                f" {http['route_agrees_with_in_process']}; load average before / after"
                f" {' / '.join(h['loadavg_before_after'])}"
            )
            print(f"routed chat through the gateway at λ={http['lam']}: {json.dumps(http['chat'])}", flush=True)
            phases["http"] = round(time.perf_counter() - t, 1)
    finally:
        fake.stop()

    first = results[tables[0]]
    story_reduction = results["story"]["quality95"]["cost_reduction"] if "story" in results else None
    figures: list[dict[str, Any]] = [
        {
            "name": f"cost_reduction_at_95pct_quality_{name}",
            "value": r["quality95"]["cost_reduction"],
            "unit": "fraction of the strongest model's cost saved",
            "baseline": r["quality95"]["best_single_mix_cost_reduction"],
            "ratio": _ratio(r["quality95"]["cost_reduction"], r["quality95"]["best_single_mix_cost_reduction"]),
            "target": GOAL_REDUCTION,
        }
        for name, r in results.items()
    ]
    figures += [
        {
            "name": f"apgr_{name}",
            "value": r["apgr"],
            "unit": "APGR (normalised cost axis)",
            "baseline": r["apgr_random"],
            "ratio": _ratio(r["apgr"], r["apgr_random"]),
            "target": None,
        }
        for name, r in results.items()
    ]
    for where, found in (("in_process", latency["total"]), ("http", http["route"]["http"] if http else None)):
        for pct, goal in (("p50", GOAL_P50_MS), ("p99", GOAL_P99_MS)):
            figures.append(
                {
                    "name": f"decision_{pct}_{where}",
                    "value": found[f"{pct}_ms"] if found else None,
                    "unit": "ms (embedding + decide)" + (", HTTP round trip" if where == "http" else ""),
                    "baseline": latency["embed"][f"{pct}_ms"],
                    "ratio": _ratio(found[f"{pct}_ms"], latency["embed"][f"{pct}_ms"]) if found else None,
                    "target": goal,
                }
            )
    print(
        json.dumps(
            {
                "bench": "routing_quality",
                "figures": figures,
                "config": {
                    **vars(args),
                    "models": MODELS,
                    "prices": PRICES,
                    "tables": TABLES,
                    "lambda_grid": len(first["points"]),
                },
                "data": {
                    "prompts": len(pool),
                    "train": len(train),
                    "judged": len(judged),
                    "held_out": len(held),
                    "clusters": first["clusters"],
                    "cluster_s": round(cluster_s, 1),
                },
                "results": results,
                "latency": latency,
                "http": http,
                "seconds": round(time.perf_counter() - started, 1),
                "phases": phases,
                "story_goal_met": story_reduction is not None and story_reduction >= GOAL_REDUCTION,
            }
        )
    )


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return round(value / baseline, 3) if value is not None and baseline else None


if __name__ == "__main__":
    main()
