"""Distillation on Banking77, through the real distillation job (distillation/jobs.py).

Run (from the repository root; the machine is shared, so nice it):

    nice -n 15 .venv/bin/python bench/distill_banking77.py                 # CPU target: 20 intents x 20 prompts
    nice -n 15 .venv/bin/python bench/distill_banking77.py --quick         # smoke run: 5 x 8, a few steps
    .venv/bin/python bench/distill_banking77.py --full --steps 2000 --batch-size 16  # GPU: all 77, full train split
    options: --intents K --per-intent M --steps S --batch-size B --lr LR --n N --modes sft,bond
             --target-modules a,b --lr-warmup F --constant-lr --beta-warmup F
             --max-new-tokens T --held-out-fraction F --seed S

Training defaults: 240 steps of 4 on the CPU (3 passes over the 320 training prompts), peak lr 2e-3 with the
trainer's warm-up + cosine decay, LoRA r 16 on every linear layer (the trainer's default target_modules),
BOND's β = 0.5 reached after the trainer's warm start (β = 0 for the first half of the steps, then a
linear ramp: --beta-warmup).

The task: classify a customer's banking request into one of the Banking77 intents. Every prompt
is a system message listing the label set ("Classify the customer's banking request into exactly
one of these intents: ...; answer with the intent name only") and the customer's text as the user
message. The teacher is a perfect one: an alias `teacher` → `openai/scripted-teacher` on the fake
OpenAI upstream (tests/fakes/openai_upstream.py, a loopback server started here), whose answer is
the gold intent of the prompt (looked up by the user text). The judge is the programmatic `exact`
check against the row's reference, the gold intent.

Everything goes through the product, in a fresh embedded engine (SQLite + chDB in a temporary
OPENTRACY_VAR_DIR; the converted SmolLM2 weights are read from the repository's var/models when
present): the prompts are imported as a dataset (JSONL rows with the reference), the version is
frozen, and one DistillationJob per mode is created on it (N teacher samples per training prompt,
20% held out; both jobs use the same seed, hence the same split) — `sft` (β = 0) and `bond`
(β = 0.5 after the warm start). Each job's three phases run as the Celery chain runs them, but synchronously in this
process (`jobs.run_phase` with `jobs.prepare`, `jobs.train`, `jobs.evaluate`: the functions the
tasks call): sampling the teacher through the engine's own /v1 path, exact-match verdicts, LoRA
training of SmolLM2-135M-Instruct, then the held-out evaluation. The figures are the job's own
evaluation: exact-match agreement with the teacher on the held-out prompts of the untrained base
(the baseline, measured in the same run) and of the trained student, and the trainer's seconds.
The device is the trainer's choice ("auto": CUDA with bf16 when present, else the CPU), so the
same command runs on a GPU machine.

Targets (the distillation issue): CPU (20 intents, 20 prompts each) agreement >= 85% after, from
under 10% before; GPU (--full: 77 intents, the full train split) >= 92%. Ends with one JSON line.
Measured results, and why BOND needs its β warm start here: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from distillation.trainer import TrainSettings  # noqa: E402  (a cheap import: torch loads lazily)

DATA = ROOT.parent / "shared" / "datasets" / "banking77"
TARGET_CPU = 85.0  # % agreement after, 20 intents x 20 prompts
TARGET_BEFORE = 10.0  # % agreement of the untrained base, at most
TARGET_GPU = 92.0  # % agreement after, all 77 intents, full train split
BETAS = {"sft": 0.0, "bond": 0.5}
LR = 2e-3
STEPS_CPU = 240


def engine() -> None:
    """A fresh embedded engine in a temporary directory: SQLite and chDB, migrated."""
    os.environ["OPENTRACY_VAR_DIR"] = tempfile.mkdtemp(prefix="distill-bench-")
    models = ROOT / "var" / "models"
    if models.is_dir():  # the SmolLM2 weights already converted from the GGUF: no 30 s de-quantization
        os.environ.setdefault("OPENTRACY_LOCAL_MODEL_DIR", str(models))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opentracy_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from traces.migrations_ch import apply_migrations

    call_command("migrate", verbosity=0)
    apply_migrations()


def load_train() -> list[tuple[str, str]]:
    with (DATA / "train.csv").open() as f:
        return [(r["text"].strip(), r["category"]) for r in csv.DictReader(f)]


def pick(*, intents: int, per_intent: int, full: bool, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(text, intent) pairs and the label set: `intents` intents drawn at random, `per_intent` prompts
    each (seeded), or everything with `full`. A text seen twice keeps its first intent (the teacher
    looks answers up by text)."""
    rows, seen = [], set()
    for text, label in load_train():
        if text and text not in seen:
            seen.add(text)
            rows.append((text, label))
    labels = sorted({label for _, label in rows})
    if full:
        return rows, labels
    rng = random.Random(seed)  # not for security: a reproducible choice
    chosen = sorted(rng.sample(labels, intents))
    picked = []
    for label in chosen:
        texts = [t for t, lab in rows if lab == label]
        rng.shuffle(texts)
        picked += [(t, label) for t in texts[:per_intent]]
    return picked, chosen


def label_tokens(labels: list[str]) -> int:
    """Tokens of the longest label for the packaged student (answers are cut at max_new_tokens)."""
    from transformers import AutoTokenizer

    from gateway.providers import local

    path = local.cache_dir()
    if not (path / "tokenizer_config.json").is_file():
        return 18  # the longest Banking77 intent is 17 SmolLM2 tokens
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return max(len(tokenizer(label)["input_ids"]) for label in labels)


def system_prompt(labels: list[str]) -> str:
    return (
        "Classify the customer's banking request into exactly one of these intents: "
        + ", ".join(labels)
        + ". Answer with the intent name only."
    )


def frozen_version(project: Any, rows: list[tuple[str, str]], labels: list[str]) -> Any:
    """A dataset of the prompts (reference = gold intent), imported as JSONL and frozen."""
    from datasets import curation as C

    system = system_prompt(labels)
    lines = [
        {
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
            "response": label,
            "reference": label,
        }
        for text, label in rows
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    dataset = C.dataset_import_jsonl(project=project, name="Banking77 intents", file=data)
    version = C.open_version(dataset=dataset)
    C.version_freeze(version=version)
    version.refresh_from_db()
    return version


def run_job(project: Any, version: Any, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Create the job (a draft), queue it without Celery and run its phases here, in chain order."""
    from distillation import jobs
    from distillation import services as S
    from distillation.models import DistillationJob

    settings = {
        "mode": mode,
        "beta": BETAS[mode],
        "beta_warmup": args.beta_warmup,
        "lr_warmup": args.lr_warmup,
        "lr_decay": not args.constant_lr,
        "target_modules": args.target_modules.split(","),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_new_tokens": args.max_new_tokens,
        "checkpoint_every": max(args.steps, 1),
        "seed": args.seed,
    }
    job = S.job_create(
        project=project,
        dataset_version=version,
        teacher="teacher",
        n=args.n,
        judge={"kind": "exact"},
        settings=settings,
        held_out_fraction=args.held_out_fraction,
        start=False,
    )
    DistillationJob.objects.filter(pk=job.pk).update(status=DistillationJob.Status.QUEUED)  # as job_start, no broker
    seconds = {}
    for name, fn, flags in (
        ("prepare", jobs.prepare, {"first": True}),
        ("train", jobs.train, {}),
        ("evaluate", jobs.evaluate, {"last": True}),
    ):
        started = time.perf_counter()
        status = jobs.run_phase(job.pk, fn, **flags)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"  {mode}: {name} {status} in {seconds[name]} s", flush=True)
    job.refresh_from_db()
    if job.status != DistillationJob.Status.DONE:
        raise SystemExit(f"job {job.pk} ({mode}) ended {job.status}: {job.message}")
    ev, metrics = job.evaluation, job.metrics
    history = metrics.get("history") or []
    last = history[-1] if history else {}
    return {
        "mode": mode,
        "beta": BETAS[mode],
        "train_prompts": len(job.split["train"]),
        "held_out": ev["held_out"],
        "base_agreement": round(100 * (ev["agreement"]["base"] or 0.0), 1),
        "student_agreement": round(100 * (ev["agreement"]["student"] or 0.0), 1),
        "student_score": ev["models"]["student"]["mean_score"],
        "base_score": ev["models"]["base"]["mean_score"],
        "teacher_score": ev["models"]["teacher"]["mean_score"],
        "train_seconds": metrics.get("seconds"),
        "steps": metrics.get("steps"),
        "device": metrics.get("device"),
        "final_loss": last.get("loss"),
        "phase_seconds": seconds,
        "estimate_seconds": job.estimate.get("training_seconds"),
        "examples": [{k: r["answers"][k] for k in ("teacher", "student", "base")} for r in ev["rows"][:3]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intents", type=int, default=20)
    ap.add_argument("--per-intent", type=int, default=20)
    ap.add_argument("--full", action="store_true", help="all 77 intents, the full train split (GPU)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 intents x 8 prompts, 6 steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--target-modules", default=",".join(TrainSettings.target_modules), help="LoRA targets")
    ap.add_argument("--beta-warmup", type=float, default=TrainSettings.beta_warmup, help="BOND: β 0, then ramped")
    ap.add_argument("--lr-warmup", type=float, default=TrainSettings.lr_warmup, help="fraction of steps")
    ap.add_argument("--constant-lr", action="store_true", help="no cosine decay after the warm-up")
    ap.add_argument("--n", type=int, default=4, help="teacher samples per training prompt")
    ap.add_argument("--modes", default="sft,bond")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="default: the longest label's tokens + 2")
    ap.add_argument("--held-out-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.intents, args.per_intent = 5, 8
    args.steps = args.steps or (6 if args.quick else 2000 if args.full else STEPS_CPU)
    args.batch_size = args.batch_size or (4 if args.quick else 16 if args.full else 4)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in BETAS]:
        raise SystemExit(f"unknown mode(s) {unknown}: use sft, bond")

    rows, labels = pick(intents=args.intents, per_intent=args.per_intent, full=args.full, seed=args.seed)
    gold = dict(rows)
    engine()
    args.max_new_tokens = args.max_new_tokens or label_tokens(labels) + 2
    from gateway.services import alias_set, credential_set, project_create
    from tests.fakes.openai_upstream import API_KEY, FakeOpenAI

    def teacher(body: dict[str, Any]) -> str:
        return gold.get(str(body["messages"][-1]["content"]).strip(), "unknown")

    fake = FakeOpenAI()
    fake.start()
    try:
        project = project_create(slug="distill-bench")
        credential_set(project=project, provider="openai", api_key=API_KEY, base_url=f"{fake.base_url}/v1")
        alias_set(project=project, name="teacher", target="openai/scripted-teacher", changed_by="bench")
        fake.scripts["scripted-teacher"] = [teacher]
        version = frozen_version(project, rows, labels)
        print(
            f"Banking77: {len(labels)} intents, {len(rows)} prompts, N={args.n}, held out {args.held_out_fraction}, "
            f"steps {args.steps}, batch {args.batch_size}, lr {args.lr} (warm-up {args.lr_warmup}, "
            f"{'constant' if args.constant_lr else 'cosine'}), LoRA on {args.target_modules}, "
            f"beta warm-up {args.beta_warmup}, max_new_tokens {args.max_new_tokens}",
            flush=True,
        )
        results = [run_job(project, version, mode, args) for mode in modes]
    finally:
        fake.stop()

    target = TARGET_GPU if args.full else TARGET_CPU
    print(
        f"\n{'mode':<6} {'beta':>5} {'base agr %':>10} {'student agr %':>13} {'train s':>8} {'steps':>6} {'device':>7}"
    )
    for r in results:
        print(
            f"{r['mode']:<6} {r['beta']:>5} {r['base_agreement']:>10} {r['student_agreement']:>13} "
            f"{r['train_seconds']!s:>8} {r['steps']!s:>6} {r['device']!s:>7}"
        )
    print(
        f"held-out prompts {results[0]['held_out'] if results else 0}; target: agreement >= {target}% after"
        + ("" if args.full else f", base < {TARGET_BEFORE}%")
    )
    figures: list[dict[str, Any]] = []
    for r in results:
        base = r["base_agreement"]
        figures.append(
            {
                "name": f"agreement_{r['mode']}",
                "value": r["student_agreement"],
                "unit": "% exact-match agreement with the teacher, held out",
                "baseline": base,
                "ratio": round(r["student_agreement"] / base, 3) if base else None,
                "target": target,
            }
        )
    sft = next((r for r in results if r["mode"] == "sft"), None)
    for r in results:
        ref = sft["train_seconds"] if sft else None
        figures.append(
            {
                "name": f"train_seconds_{r['mode']}",
                "value": r["train_seconds"],
                "unit": "s",
                "baseline": ref,
                "ratio": round(r["train_seconds"] / ref, 3) if ref and r["train_seconds"] else None,
                "target": None,
            }
        )
    config = {
        "intents": len(labels),
        "prompts": len(rows),
        "n": args.n,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_warmup": args.lr_warmup,
        "lr_decay": not args.constant_lr,
        "target_modules": args.target_modules,
        "beta_warmup": args.beta_warmup,
        "max_new_tokens": args.max_new_tokens,
        "held_out_fraction": args.held_out_fraction,
        "seed": args.seed,
        "full": args.full,
        "quick": args.quick,
    }
    print(json.dumps({"bench": "distill_banking77", "figures": figures, "config": config, "results": results}))


if __name__ == "__main__":
    main()
