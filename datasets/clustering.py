"""Clustering core: prompts → MiniLM embeddings (and, when configured, a stronger model's on a
sample) → UMAP → HDBSCAN → clusters with summaries.

No Django models here: `datasets/runs.py` stores runs and clusters and calls these functions.
Heavy imports (torch, sentence-transformers, umap, hdbscan) are lazy.

Why this pipeline (measured by `bench/clustering_quality.py` on Banking77 / CLINC150 test; the
table of what was tried is in that file's docstring): raw HDBSCAN on the 384-d vectors leaves
44-69% of the prompts as noise (densities are flat in high dimensions) and PCA to 20-50 dims does
not help; UMAP to 5 dims (cosine, min_dist=0) makes the intent groups dense and separable, after
which HDBSCAN finds them without being told K: NMI 81-82 / 90-91 with 1-6% noise, above MiniLM +
KMeans given the true K (79 / 89).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

NOISE = -1
MIN_POINTS = 20  # below this UMAP's neighbourhood graph and HDBSCAN's densities mean nothing


# -- embedding ------------------------------------------------------------------------------------
def embed(texts: Sequence[str], model: str | None = None) -> np.ndarray:
    """(n, dimensions) float32 unit vectors from `model` (datasets/embedder.py; MiniLM by default). The
    model reads at most `max_seq_length` word pieces (MiniLM: 256): longer prompts are embedded from
    their start, where the request is nearly always stated (embedding_cache counts them for the run's
    message). Empty and whitespace-only prompts share one vector."""
    from . import embedder

    model = model or embedder.DEFAULT_MODEL
    # Whitespace runs carry no meaning for the model; a prefix of ~8 chars per word piece is always
    # more than it reads, and spares the tokenizer a 10 MB prompt.
    limit = embedder.max_tokens(model) * 8
    return embedder.encode([" ".join(t.split())[:limit] for t in texts], model)


# -- reduction and clustering ---------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterParams:
    """One set of defaults for every dataset (chosen on Banking77 and CLINC150 together, see the
    table in bench/clustering_quality.py); only min_cluster_size follows n."""

    n_neighbors: int = 15  # 30 was no better (Banking NMI 81.3 vs 81.1, CLINC 89.9 both) and 2x slower
    n_components: int = 5  # 10 lost 0.1-0.6 NMI and left more noise
    min_cluster_size: int | None = None  # None: `min_cluster_size_for(n)`
    min_samples: int = 3  # low: fewer points declared noise (Banking 5.8% vs 10.2%), NMI +1.5-2
    selection: Literal["eom", "leaf"] = "eom"  # leaf split intents (ARI 45 vs 50 on Banking)
    # noise joins a cluster when inside its radius (farthest member). Measured (Banking / CLINC NMI,
    # noise%): quantile 0.8: 81.5/90.0, 4.8/2.7; 0.9: 81.6/90.2, 4.1/2.3; 1.0: 82.1/90.7, 2.2/0.9;
    # forcing every noise point: 82.3/90.8 — so the radius keeps real outliers out at little cost.
    assign_quantile: float = 1.0
    max_fit: int = 20_000  # larger inputs: fit on a sample, assign the rest (keeps 100k affordable)
    random_state: int = 42  # fixed: a re-run on the same traces gives the same clusters
    # "umap" (default, measured best); "pca" (50 dims) and "none" (HDBSCAN on the 384-d vectors) are
    # kept for comparison and for sets too small for UMAP's neighbourhood graph; both left 44-65%
    # of Banking77/CLINC150 as noise before the noise assignment (bench/clustering_quality.py).
    reduction: Literal["umap", "pca", "none"] = "umap"


def min_cluster_size_for(n: int) -> int:
    """15 prompts at a few thousand (measured best on both sets: 8 over-splits, 25 merges intents),
    growing as sqrt(n) so a 20k fit does not give thousands of micro-clusters."""
    return max(15, round(math.sqrt(n) / 5))


def reduce(embeddings: np.ndarray, params: ClusterParams) -> np.ndarray:
    """UMAP to a few dimensions. Raw HDBSCAN on 384-d left 44-65% noise at NMI 42-66; PCA to 50
    dims no better (48% noise); UMAP(cosine) + HDBSCAN: NMI 81 / 90 with 3-6% noise."""
    if params.reduction == "none":
        return np.asarray(embeddings, dtype=np.float32)
    if params.reduction == "pca":
        from sklearn.decomposition import PCA

        dims = min(50, embeddings.shape[0] - 1, embeddings.shape[1])
        return np.asarray(
            PCA(n_components=dims, random_state=params.random_state).fit_transform(embeddings), np.float32
        )
    import umap

    # Centred first: every prompt shares a common component ("a request to an assistant") that
    # crowds cosine similarities together; removing the set's mean spreads them. Measured over five
    # UMAP seeds (bench/clustering_quality.py): NMI +0.4 on Banking77 and +0.5 on CLINC150 with
    # MiniLM, +0.1 with mpnet. Only the reduction sees it: centroids stay in the embedding space.
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    reducer = umap.UMAP(
        n_neighbors=min(params.n_neighbors, len(embeddings) - 1),
        n_components=params.n_components,
        min_dist=0.0,  # pack neighbours tightly: we want density for HDBSCAN, not a pretty plot
        metric="cosine",
        random_state=params.random_state,
        n_jobs=1,  # a fixed seed makes UMAP single-threaded anyway; saying so silences its warning
        low_memory=True,
    )
    return np.asarray(reducer.fit_transform(centred), dtype=np.float32)


@dataclass
class Clustering:
    labels: np.ndarray  # final labels, NOISE (-1) = unclustered
    hdbscan_labels: np.ndarray  # before noise assignment
    probabilities: np.ndarray  # HDBSCAN membership strength (0 for noise; 1 for assigned-later points)
    model: Centroids
    noise_before: float  # HDBSCAN noise share of the fitted points (the sample when n > max_fit)
    noise_after: float  # share of all n left unclustered after the assignment
    timings: dict[str, float] = field(default_factory=dict)


def fit_sample(n: int, params: ClusterParams) -> np.ndarray:
    """The sorted indices of the prompts UMAP and HDBSCAN see: all of them up to max_fit, else a
    seeded random sample (the same for the same n, so a caller can embed only these with a grouping model)."""
    if n <= params.max_fit:
        return np.arange(n)
    return np.sort(np.random.default_rng(params.random_state).choice(n, params.max_fit, replace=False))


def cluster(
    embeddings: np.ndarray, params: ClusterParams | None = None, *, grouping: np.ndarray | None = None
) -> Clustering:
    """UMAP + HDBSCAN on (a sample of) the prompts, then the close noise points and the unsampled
    points assigned to the nearest cluster within its own radius.

    `embeddings` are every prompt's vectors in the run's space (MiniLM). `grouping`, when given, are
    the vectors of the fit_sample() prompts from a stronger model: they decide the groups and place
    the sample's noise; the clusters' centroids are then fitted in the run's space, where the rest
    of the prompts (and later traces) are placed."""
    import time

    import hdbscan

    params = params or ClusterParams()
    n = len(embeddings)
    if n < MIN_POINTS:
        raise ValueError(f"clustering needs at least {MIN_POINTS} prompts, got {n}")
    fit_idx = fit_sample(n, params)
    x = embeddings[fit_idx]
    g = x if grouping is None else grouping
    if len(g) != len(fit_idx):
        raise ValueError(f"grouping vectors for {len(g)} prompts, the fit sample has {len(fit_idx)}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    reduced = reduce(g, params)
    timings["umap_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mcs = params.min_cluster_size or min_cluster_size_for(len(x))
    hd = hdbscan.HDBSCAN(
        min_cluster_size=mcs,
        min_samples=min(params.min_samples, mcs),
        cluster_selection_method=params.selection,
    ).fit(reduced)
    timings["hdbscan_s"] = time.perf_counter() - t
    fit_labels = np.asarray(hd.labels_, dtype=np.int64)
    if fit_labels.max() < 0:
        raise ValueError("no cluster found: the prompts are too few or too uniform for min_cluster_size")
    t = time.perf_counter()
    hd_labels = np.full(n, NOISE, dtype=np.int64)
    hd_labels[fit_idx] = fit_labels
    probs = np.zeros(n, dtype=np.float32)
    probs[fit_idx] = hd.probabilities_
    model = fit_centroids(x, fit_labels, quantile=params.assign_quantile)
    grouped = model if grouping is None else fit_centroids(g, fit_labels, quantile=params.assign_quantile)
    labels = hd_labels.copy()
    noise = fit_labels == NOISE
    labels[fit_idx[noise]] = assign_new(g[noise], grouped)
    rest = np.ones(n, dtype=bool)
    rest[fit_idx] = False
    labels[rest] = assign_new(embeddings[rest], model)
    probs[(hd_labels == NOISE) & (labels != NOISE)] = 1.0
    timings["assign_s"] = time.perf_counter() - t
    noise_before = float(noise.mean())
    noise_after = float((labels == NOISE).mean())
    log.info(
        "cluster: %d prompts, %d clusters, noise %.1f%% -> %.1f%%",
        n,
        len(model.ids),
        100 * noise_before,
        100 * noise_after,
    )
    return Clustering(labels, hd_labels, probs, model, noise_before, noise_after, timings)


# -- centroids, noise assignment and incremental assignment ---------------------------------------
@dataclass(frozen=True)
class Centroids:
    """What a clustering run keeps to place new prompts: one unit centroid and one radius (cosine
    distance) per cluster. Assignment happens in the embedding space, not UMAP's: it needs no fitted
    reducer and stays valid for prompts the run never saw."""

    ids: np.ndarray  # (k,) cluster labels
    vectors: np.ndarray  # (k, d) unit centroids
    radii: np.ndarray  # (k,) cosine distance within which a point belongs


def fit_centroids(embeddings: np.ndarray, labels: np.ndarray, *, quantile: float = 1.0) -> Centroids:
    """Radius = the `quantile` of the members' own distances to their centroid: a noise point that
    is closer than 90% of a cluster's members is clearly part of it; one further out stays noise."""
    ids = np.array(sorted(set(labels.tolist()) - {NOISE}), dtype=np.int64)
    d = embeddings.shape[1]
    vectors = np.zeros((len(ids), d), dtype=np.float32)
    radii = np.zeros(len(ids), dtype=np.float32)
    for j, c in enumerate(ids):
        members = embeddings[labels == c]
        centre = members.mean(axis=0)
        centre /= np.linalg.norm(centre) or 1.0
        vectors[j] = centre
        radii[j] = np.quantile(1.0 - members @ centre, quantile)
    return Centroids(ids, vectors, radii)


def assign_new(embeddings: np.ndarray, model: Centroids, *, chunk: int = 8192) -> np.ndarray:
    """Nearest centroid by cosine, or NOISE when further than that cluster's radius (outliers stay
    unclustered until the next full run)."""
    out = np.full(len(embeddings), NOISE, dtype=np.int64)
    if len(model.ids) == 0:
        return out
    for start in range(0, len(embeddings), chunk):
        dist = 1.0 - embeddings[start : start + chunk] @ model.vectors.T
        best = dist.argmin(axis=1)
        ok = dist[np.arange(len(best)), best] <= model.radii[best]
        out[start : start + chunk] = np.where(ok, model.ids[best], NOISE)
    return out


# -- summaries -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterSummary:
    label: int
    size: int
    representatives: list[str]  # closest to the centroid first
    keywords: list[str]  # by c-TF-IDF
    cohesion: float  # mean cosine similarity of the members to the centroid
    separation: float  # cosine distance to the nearest other centroid


def summarize(
    texts: Sequence[str], embeddings: np.ndarray, labels: np.ndarray, *, n_repr: int = 5, n_keywords: int = 8
) -> list[ClusterSummary]:
    from sklearn.feature_extraction.text import CountVectorizer

    model = fit_centroids(embeddings, labels)
    if len(model.ids) == 0:
        return []
    # c-TF-IDF (BERTopic): one document per cluster; term frequency in the cluster times
    # log(1 + average words per cluster / term frequency over all clusters) favours words that are
    # frequent in this cluster and rare elsewhere.
    docs = [" ".join(texts[int(i)] for i in np.flatnonzero(labels == c)) for c in model.ids]
    vectorizer = CountVectorizer(stop_words="english", ngram_range=(1, 2), min_df=1)
    try:
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)
        vocab = vectorizer.get_feature_names_out()
    except ValueError:  # only stop words / empty prompts
        counts, vocab = np.zeros((len(docs), 0)), np.array([], dtype=str)
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    avg_words = counts.sum() / len(docs)
    ctfidf = tf * np.log1p(avg_words / np.maximum(counts.sum(axis=0), 1.0))
    between = 1.0 - model.vectors @ model.vectors.T
    np.fill_diagonal(between, np.inf)
    out = []
    for j, c in enumerate(model.ids):
        idx = np.flatnonzero(labels == c)
        sims = embeddings[idx] @ model.vectors[j]
        top = idx[np.argsort(-sims)[:n_repr]]
        kw = [str(vocab[k]) for k in np.argsort(-ctfidf[j])[:n_keywords] if ctfidf[j, k] > 0]
        sep = float(between[j].min()) if len(model.ids) > 1 else 1.0
        out.append(ClusterSummary(int(c), len(idx), [texts[int(i)] for i in top], kw, float(sims.mean()), sep))
    return out


# -- identity across runs --------------------------------------------------------------------------
def match_clusters(
    old_members: Mapping[Any, set[str]], new_members: Mapping[Any, set[str]], *, min_jaccard: float = 0.5
) -> dict[Any, Any]:
    """new cluster id → old cluster id, one-to-one, for pairs whose member sets (trace ids) overlap
    with Jaccard ≥ min_jaccard. Greedy by decreasing Jaccard; with a threshold of 0.5 a cluster can
    have at most one partner above it anyway, so greedy is optimal there."""
    inverted: dict[str, list[Any]] = {}
    for old_id, members in old_members.items():
        for m in members:
            inverted.setdefault(m, []).append(old_id)
    pairs: list[tuple[float, Any, Any]] = []
    for new_id, members in new_members.items():
        overlap: dict[Any, int] = {}
        for m in members:
            for old_id in inverted.get(m, ()):
                overlap[old_id] = overlap.get(old_id, 0) + 1
        for old_id, inter in overlap.items():
            jac = inter / (len(members) + len(old_members[old_id]) - inter)
            if jac >= min_jaccard:
                pairs.append((jac, new_id, old_id))
    pairs.sort(key=lambda p: -p[0])
    result: dict[Any, Any] = {}
    used: set[Any] = set()
    for _jac, new_id, old_id in pairs:
        if new_id not in result and old_id not in used:
            result[new_id] = old_id
            used.add(old_id)
    return result
