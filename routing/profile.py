"""Ψ, the error profile: for each cluster c and candidate m, the probability that m answers a prompt
of c wrongly, with its sample count and a 95% interval.

Evidence is `e` errors out of `n` judged answers per cell (all ProfileCell sources summed). A sparse
cell is shrunk towards an anchor `a` with `k` pseudo-samples (the policy's `shrinkage`):

    Ψ[c, m] = (e + k·a) / (n + k)

    g[m]    = (Σ_c e + k·p[m]) / (Σ_c n + k)      the model's global rate, itself shrunk to its prior p[m]
    a[c, m] = prior[c, m] + (g[m] − p[m])        where the shipped prior has the cell, clipped to (0, 1)
            = g[m]                               where it has not

p[m] is the mean of the model's prior cells (UNKNOWN_MODEL_PRIOR for a model the prior does not
know). On day 0 (no evidence) Ψ is the prior; as a model's evidence arrives anywhere its sparse
cells move with its global rate; as a cell's own evidence grows it dominates. The interval is the
Beta(e + k·a, n − e + k·(1 − a)) posterior's 2.5% and 97.5% quantiles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta as beta_dist

UNKNOWN_MODEL_PRIOR = 0.3
EPS = 1e-3


@dataclass(frozen=True)
class Profile:
    cluster_keys: tuple[str, ...]
    models: tuple[str, ...]
    psi: np.ndarray  # (K, M) shrunk error rates
    errors: np.ndarray  # (K, M) evidence
    samples: np.ndarray  # (K, M)
    anchor: np.ndarray  # (K, M)
    low: np.ndarray  # (K, M) 95% interval
    high: np.ndarray
    informed: np.ndarray  # (K, M) bool: the prior or evidence says something about the cell

    def cell(self, k: int, m: int) -> dict[str, float | int]:
        return {
            "error": round(float(self.psi[k, m]), 4),
            "samples": int(self.samples[k, m]),
            "errors": round(float(self.errors[k, m]), 2),
            "low": round(float(self.low[k, m]), 4),
            "high": round(float(self.high[k, m]), 4),
            "anchor": round(float(self.anchor[k, m]), 4),
        }


def build(
    cluster_keys: tuple[str, ...],
    models: tuple[str, ...],
    evidence: Iterable[tuple[str, str, float, int]],
    prior: np.ndarray,
    shrinkage: float,
) -> Profile:
    """`evidence`: (cluster_key, model, errors, samples) rows, any number per cell; `prior`: (K, M)
    error rates with NaN where the shipped prior has no cell."""
    kidx = {c: i for i, c in enumerate(cluster_keys)}
    midx = {m: j for j, m in enumerate(models)}
    shape = (len(cluster_keys), len(models))
    errors, samples = np.zeros(shape), np.zeros(shape)
    for cluster, model, e, n in evidence:
        if cluster in kidx and model in midx and n > 0:
            errors[kidx[cluster], midx[model]] += min(float(e), float(n))
            samples[kidx[cluster], midx[model]] += n
    k = max(float(shrinkage), EPS)
    has_prior = ~np.isnan(prior)
    counts = has_prior.sum(axis=0)
    p = np.where(counts > 0, np.nan_to_num(prior).sum(axis=0) / np.maximum(counts, 1), UNKNOWN_MODEL_PRIOR)
    g = (errors.sum(axis=0) + k * p) / (samples.sum(axis=0) + k)
    anchor = np.where(has_prior, np.clip(np.nan_to_num(prior) + (g - p), EPS, 1 - EPS), g)
    anchor = np.clip(anchor, EPS, 1 - EPS)
    psi = (errors + k * anchor) / (samples + k)
    a, b = errors + k * anchor, samples - errors + k * (1 - anchor)
    low, high = beta_dist.ppf(0.025, a, b), beta_dist.ppf(0.975, a, b)
    informed = has_prior | (samples > 0)
    return Profile(cluster_keys, models, psi, errors, samples, anchor, low, high, informed)
