"""The shipped day-0 profile (routing/data/prior.json): public benchmark accuracies per model,
mapped to a small set of prompt clusters whose centroids are the mean MiniLM vector of their
example prompts. A project's own clusters borrow the prior of their nearest shipped cluster."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import embedder

PATH = Path(__file__).parent / "data" / "prior.json"


@dataclass(frozen=True)
class PriorCluster:
    key: str
    name: str
    benchmark: str
    examples: tuple[str, ...]


@functools.cache
def data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PATH.read_text())
    return loaded


def clusters() -> tuple[PriorCluster, ...]:
    return tuple(PriorCluster(c["key"], c["name"], c["benchmark"], tuple(c["examples"])) for c in data()["clusters"])


def models() -> tuple[str, ...]:
    return tuple(data()["scores"])


@functools.cache
def centroids() -> np.ndarray:
    """(K, 384) unit centroids of the shipped clusters, in `clusters()` order (embedded once)."""
    rows = []
    for c in clusters():
        mean = embedder.embed_many(list(c.examples)).mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows).astype(np.float32)


def errors(model: str) -> dict[str, float]:
    """The model's prior error rate per shipped cluster key (empty for a model the prior lacks)."""
    scores = data()["scores"].get(model) or {}
    mapping = data()["benchmarks"]
    return {mapping[b]: round(1 - float(v) / 100, 4) for b, v in scores.items() if b in mapping}


def matrix(cluster_centroids: np.ndarray | None, candidate_models: tuple[str, ...]) -> np.ndarray:
    """(K, M) prior errors, NaN where unknown. `cluster_centroids` None means the shipped clusters
    themselves; else each row borrows its nearest shipped cluster's prior."""
    keys = [c.key for c in clusters()]
    if cluster_centroids is None:
        nearest = list(range(len(keys)))
    else:
        nearest = list(np.argmax(cluster_centroids @ centroids().T, axis=1)) if len(cluster_centroids) else []
    out = np.full((len(nearest), len(candidate_models)), np.nan)
    for j, model in enumerate(candidate_models):
        known = errors(model)
        for i, n in enumerate(nearest):
            if keys[n] in known:
                out[i, j] = known[keys[n]]
    return out
