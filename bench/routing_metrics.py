"""The figures of bench/routing_quality.py for one outcome table: the router's λ sweep through
routing.router.decide, each single model, random routing, the best prompt-blind mix, the oracle,
APGR, CPT(95%) and the cost reduction at 95% of the strongest model's quality (definitions in
bench/routing_quality.py's docstring)."""

from __future__ import annotations

from typing import Any

import numpy as np
from routing_workload import MODELS, model_name

FINE_LAMBDAS = tuple(float(x) for x in np.geomspace(1e-3, 20.0, 64))


def route_all(compiled: Any, embedded: list[Any], tokens: list[int], lams: tuple[float, ...]) -> np.ndarray:
    """(len(lams), n) index (in MODELS) of the candidate routing.router.decide picks per prompt."""
    from routing.router import decide

    index = {model_name(s): j for j, s in enumerate(MODELS)}
    picks = np.zeros((len(lams), len(embedded)), dtype=int)
    for i, (emb, n) in enumerate(zip(embedded, tokens, strict=True)):
        for a, lam in enumerate(lams):
            picks[a, i] = index[decide(compiled, emb, prompt_tokens=n, lam=lam).chosen]
    return picks


def upper_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave hull of (x, y) points, by x (monotone chain)."""
    hull: list[tuple[float, float]] = []
    for p in sorted(set(points)):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] is under the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def hull_at(hull: list[tuple[float, float]], x: float) -> float:
    xs, ys = zip(*hull, strict=True)
    return float(np.interp(x, xs, ys))


def hull_area(hull: list[tuple[float, float]]) -> float:
    """∫₀¹ of the hull (flat beyond its ends)."""
    grid = np.linspace(0.0, 1.0, 2001)
    return float(np.trapezoid([hull_at(hull, x) for x in grid], grid))


def evaluate(
    compiled: Any, embedded: list[Any], tokens: list[int], domains: list[str], correct: np.ndarray, cost: np.ndarray
) -> dict[str, Any]:
    """Every figure of one outcome table on the held-out prompts (`correct` and `cost` (n, M) in
    MODELS order)."""
    from routing.router import LAMBDAS, curve

    n = len(embedded)
    rows = np.arange(n)
    singles = {s: (float(correct[:, j].mean()), 1000 * float(cost[:, j].mean())) for j, s in enumerate(MODELS)}
    strong = max(MODELS, key=lambda s: singles[s][1])  # the dearest (also the most accurate here)
    weak = min(MODELS, key=lambda s: singles[s][1])
    (a_s, c_s), (a_w, c_w) = singles[strong], singles[weak]

    def x_of(c: float) -> float:
        return (c - c_w) / (c_s - c_w)

    def pgr(a: float) -> float:
        return (a - a_w) / (a_s - a_w)

    lams = tuple(sorted(set(LAMBDAS) | set(FINE_LAMBDAS)))
    picks = route_all(compiled, embedded, tokens, lams)
    vectors = np.stack([e.vector for e in embedded])
    predicted = {p["lam"]: p["error"] for p in curve(compiled, vectors, float(np.mean(tokens)), lams)["points"]}
    single_hull = upper_hull([(x_of(c), pgr(a)) for a, c in singles.values()])
    points = []
    for a, lam in enumerate(lams):
        pick = picks[a]
        acc = float(correct[rows, pick].mean())
        usd = 1000 * float(cost[rows, pick].mean())
        shares = np.bincount(pick, minlength=len(MODELS)) / n
        p_strong = min(max(x_of(usd), 0.0), 1.0)
        points.append(
            {
                "lam": round(lam, 5),
                "accuracy": round(acc, 4),
                "usd_per_1k": round(usd, 5),
                "pgr": round(pgr(acc), 4),
                "x": round(x_of(usd), 4),
                "shares": {s: round(float(v), 4) for s, v in zip(MODELS, shares, strict=True)},
                "predicted_accuracy": round(1 - predicted[lam], 4),
                "random_accuracy": round(p_strong * a_s + (1 - p_strong) * a_w, 4),
                "best_mix_accuracy": round(a_w + (a_s - a_w) * hull_at(single_hull, x_of(usd)), 4),
                "in_lambdas": lam in LAMBDAS,
            }
        )
    router_hull = upper_hull([(0.0, 0.0), (1.0, 1.0), *((p["x"], p["pgr"]) for p in points)])
    # oracle: the cheapest correct model, else the cheapest
    by_price = np.argsort(cost, axis=1)
    chosen = np.array([next((j for j in by_price[i] if correct[i, j]), by_price[i][0]) for i in range(n)])
    oracle = {"accuracy": float(correct[rows, chosen].mean()), "usd_per_1k": 1000 * float(cost[rows, chosen].mean())}
    target_acc = 0.95 * a_s
    ok = [p for p in points if p["accuracy"] >= target_acc]
    best95 = min(ok, key=lambda p: p["usd_per_1k"]) if ok else None
    by_domain = {}
    if best95:  # where the router sends each domain at that point, and what it gets there
        pick = picks[points.index(best95)]
        for d in sorted(set(domains)):
            mask = np.array([x == d for x in domains])
            by_domain[d] = {
                "n": int(mask.sum()),
                "accuracy": round(float(correct[rows[mask], pick[mask]].mean()), 4),
                "strongest_accuracy": round(float(correct[mask, MODELS.index(strong)].mean()), 4),
                "shares": {s: round(float((pick[mask] == j).mean()), 3) for j, s in enumerate(MODELS)},
            }
    ok_pgr = [p for p in points if p["pgr"] >= 0.95]
    cpt95 = min((p["shares"][strong] for p in ok_pgr), default=None)
    # the prompt-blind mix reaching 95% of the strongest: the cheapest x on the single-model hull
    grid = np.linspace(0, 1, 10001)
    mix95 = next((x for x in grid if a_w + (a_s - a_w) * hull_at(single_hull, x) >= target_acc), 1.0)
    return {
        "n_held_out": n,
        "strongest": strong,
        "cheapest": weak,
        "singles": {s: {"accuracy": round(a, 4), "usd_per_1k": round(c, 5)} for s, (a, c) in singles.items()},
        "points": points,
        "oracle": {k: round(v, 5) for k, v in oracle.items()},
        "apgr": round(hull_area(router_hull), 4),
        "apgr_best_single_mix": round(hull_area(single_hull), 4),
        "apgr_random": 0.5,
        "apgr_oracle": round(
            hull_area(upper_hull([(0.0, 0.0), (1.0, 1.0), (x_of(oracle["usd_per_1k"]), pgr(oracle["accuracy"]))])), 4
        ),
        "cpt95_share_strongest": cpt95,
        "quality95": {
            "target_accuracy": round(target_acc, 4),
            "router": best95,
            "cost_reduction": round(1 - best95["usd_per_1k"] / c_s, 4) if best95 else None,
            "best_single_mix_cost_reduction": round(1 - (c_w + mix95 * (c_s - c_w)) / c_s, 4),
            "random_cost_reduction": round(1 - (c_w + ((target_acc - a_w) / (a_s - a_w)) * (c_s - c_w)) / c_s, 4),
            "oracle_cost_reduction": round(1 - oracle["usd_per_1k"] / c_s, 4),
            "by_domain": by_domain,
        },
    }
