"""The synthetic workload of bench/routing_quality.py (its docstring tells the story): real
prompts from CLINC150 and Banking77, five priced candidates, an accuracy table per domain, and
per-prompt outcomes drawn from it with correlated errors."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets"

MODELS = ("frontier", "fin-mid", "general-mid", "small", "tiny")
PRICES = {  # USD per million tokens: input, output
    "frontier": (2.50, 10.00),
    "fin-mid": (0.40, 1.60),
    "general-mid": (0.30, 1.20),
    "small": (0.10, 0.40),
    "tiny": (0.02, 0.04),
}
# accuracy %, per domain, in MODELS order (the story is bench/routing_quality.py's docstring)
STORY: dict[str, tuple[int, ...]] = {
    "banking": (95, 94, 82, 65, 45),
    "credit_cards": (95, 94, 82, 65, 45),
    "banking77": (90, 88, 65, 40, 20),
    "kitchen_and_dining": (95, 80, 93, 80, 55),
    "home": (95, 80, 93, 85, 60),
    "auto_and_commute": (95, 80, 93, 75, 50),
    "travel": (95, 80, 93, 75, 50),
    "utility": (96, 82, 94, 88, 75),
    "work": (95, 80, 93, 75, 50),
    "small_talk": (97, 75, 92, 93, 85),
    "meta": (96, 75, 90, 90, 80),
}
HARSH_DROP = 5  # points taken off every cheaper model in the "harsh" table
TABLES: dict[str, dict[str, tuple[int, ...]]] = {
    "story": STORY,
    "harsh": {d: (a[0], *(x - HARSH_DROP for x in a[1:])) for d, a in STORY.items()},
}
ANSWER = "Intent: {}"  # what a candidate answers; 2 words as the fake upstream counts usage
ANSWER_TOKENS = 2


def model_name(short: str) -> str:
    return f"openai/scripted-{short}"


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Prompt:
    text: str
    intent: str
    domain: str


def load_pool(quick: bool, seed: int) -> list[Prompt]:
    """CLINC150 test (domain from domains.json) and Banking77 test (domain `banking77`); distinct
    texts. Quick: 3 intents per CLINC domain and 5 Banking77 intents, drawn with the seed."""
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text())["test"]
    domain_of = {
        intent: domain
        for domain, intents in json.loads((DATA / "clinc150" / "domains.json").read_text()).items()
        for intent in intents
    }
    with (DATA / "banking77" / "test.csv").open() as f:
        banking = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    rows = [Prompt(t.strip(), i, domain_of[i]) for t, i in clinc]
    rows += [Prompt(t.strip(), f"b77:{c}", "banking77") for t, c in banking]
    if quick:
        rng = random.Random(seed)  # not for security: a reproducible subset
        by_domain: dict[str, list[str]] = defaultdict(list)
        for intent in sorted({p.intent for p in rows}):
            by_domain[next(p.domain for p in rows if p.intent == intent)].append(intent)
        keep = {i for d, intents in by_domain.items() for i in rng.sample(intents, 5 if d == "banking77" else 3)}
        rows = [p for p in rows if p.intent in keep]
    seen: set[str] = set()
    out = []
    for p in rows:
        if p.text and p.text not in seen:
            seen.add(p.text)
            out.append(p)
    return out


def split(pool: list[Prompt], train_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out prompts: `train_fraction` of each intent's prompts."""
    rng = random.Random(seed)
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pool):
        by_intent[p.intent].append(i)
    train, held = [], []
    for intent in sorted(by_intent):
        idx = by_intent[intent]
        rng.shuffle(idx)
        cut = round(len(idx) * train_fraction)
        train += idx[:cut]
        held += idx[cut:]
    return sorted(train), sorted(held)


def outcomes(pool: list[Prompt], table: dict[str, tuple[int, ...]], rho: float, seed: int) -> np.ndarray:
    """(n, M) bool: model m answers prompt i correctly (Gaussian copula, see the docstring)."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    z = rng.standard_normal(len(pool))[:, None]
    e = rng.standard_normal((len(pool), len(MODELS)))
    latent = rho * z + np.sqrt(1 - rho**2) * e
    acc = np.array([table[p.domain] for p in pool], dtype=float) / 100
    return latent < norm.ppf(acc)
