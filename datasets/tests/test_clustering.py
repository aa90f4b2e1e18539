"""datasets/clustering.py on the real MiniLM model and real Banking77 prompts (no download)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from datasets import clustering as C
from datasets import embedding_cache

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "banking77"
INTENTS = [
    "card_arrival",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "pin_blocked",
    "cash_withdrawal_charge",
]
PER_INTENT = 40
HELD_OUT = 8  # of each intent's 40, kept out of the clustering to test incremental assignment


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    by_intent: dict[str, list[str]] = {i: [] for i in INTENTS}
    with (DATA / "train.csv").open() as f:
        for row in csv.DictReader(f):
            bucket = by_intent.get(row["category"])
            if bucket is not None and len(bucket) < PER_INTENT:
                bucket.append(row["text"])
    texts, labels, held_texts, held_labels = [], [], [], []
    for intent, rows in by_intent.items():
        assert len(rows) == PER_INTENT
        texts += rows[HELD_OUT:]
        labels += [intent] * (PER_INTENT - HELD_OUT)
        held_texts += rows[:HELD_OUT]
        held_labels += [intent] * HELD_OUT
    vectors = C.embed(texts + held_texts)
    n = len(texts)
    result = C.cluster(vectors[:n])
    return {
        "texts": texts,
        "labels": labels,
        "vectors": vectors[:n],
        "held_vectors": vectors[n:],
        "held_labels": held_labels,
        "result": result,
    }


def test_embed_normalises_and_reports_empty_and_truncated() -> None:
    long = "card " * 20_000
    texts = ["", "   \n\t", "my card has not arrived", long]
    vectors = C.embed(texts)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)  # whitespace-only = empty
    # 20k words, far over the 256 word pieces MiniLM reads: the only one counted as truncated
    assert embedding_cache.truncated_by_model(texts) == {long}


def test_clusters_recover_intents_without_k(data: dict) -> None:
    result = data["result"]
    nmi = normalized_mutual_info_score(data["labels"], result.labels)
    # measured 0.892 (6 clusters, noise 5.2% -> 0.5%); a broken reduction or parameters fall far below
    assert nmi >= 0.75, nmi
    assert 4 <= len(result.model.ids) <= 12
    assert result.noise_after <= result.noise_before
    assert result.noise_after <= 0.15
    # noise stays noise: labels are -1 or a cluster id, never invented
    assert set(result.labels.tolist()) <= {*result.model.ids.tolist(), C.NOISE}


def test_too_few_points_is_a_clear_error() -> None:
    vectors = C.embed(["hello", "my card", "exchange rate"])
    with pytest.raises(ValueError, match="at least"):
        C.cluster(vectors)


def test_assign_new_places_held_out_prompts_and_leaves_outliers(data: dict) -> None:
    result = data["result"]
    # the cluster that holds most of each intent's clustered prompts
    home = {}
    for intent in INTENTS:
        got = Counter(int(lab) for lab, y in zip(result.labels, data["labels"], strict=True) if y == intent)
        got.pop(C.NOISE, None)
        home[intent] = got.most_common(1)[0][0]
    assigned = C.assign_new(data["held_vectors"], result.model)
    placed = [(int(a), y) for a, y in zip(assigned, data["held_labels"], strict=True) if a != C.NOISE]
    # a held-out prompt is like a member, but some fall beyond the farthest member and stay noise
    assert len(placed) >= 0.6 * len(assigned), assigned
    assert sum(a == home[y] for a, y in placed) >= 0.9 * len(placed), placed
    outliers = C.embed(["Write a haiku about autumn leaves", "What is the boiling point of tungsten?"])
    assert (C.assign_new(outliers, result.model) == C.NOISE).all()


def test_summaries(data: dict) -> None:
    summaries = C.summarize(data["texts"], data["vectors"], data["result"].labels)
    assert summaries
    for s in summaries:
        assert s.representatives and s.keywords
        assert 0.3 < s.cohesion <= 1.0
        assert 0.0 < s.separation <= 2.0
    words = {w for s in summaries for w in s.keywords}
    assert {"pin", "exchange"} & words


def test_match_clusters_keeps_ids() -> None:
    old = {"a": {"1", "2", "3", "4"}, "b": {"5", "6", "7"}, "c": {"8", "9"}}
    new = {10: {"5", "6", "7", "x"}, 11: {"1", "2", "3"}, 12: {"8", "y", "z", "w"}}
    assert C.match_clusters(old, new) == {10: "b", 11: "a"}  # 12 overlaps "c" at 1/5 < 0.5: new
    # one-to-one: two new clusters splitting one old cluster cannot both inherit its id
    split = {1: {"1", "2", "3"}, 2: {"1", "2", "3", "4", "q"}}
    assert list(C.match_clusters(old, split).values()) == ["a"]


def test_rerun_keeps_identity(data: dict) -> None:
    first = data["result"].labels
    again = C.cluster(data["vectors"]).labels
    members = lambda labels: {  # noqa: E731
        int(c): {str(i) for i in np.flatnonzero(labels == c)} for c in set(labels.tolist()) - {C.NOISE}
    }
    mapping = C.match_clusters(members(first), members(again))
    assert len(mapping) >= len(members(again)) - 1


def _blobs(rng: np.random.Generator, centres: np.ndarray, labels: np.ndarray, spread: float) -> np.ndarray:
    points = centres[labels] + spread * rng.standard_normal((len(labels), centres.shape[1]))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_grouping_vectors_decide_the_groups_and_the_space_places_the_rest() -> None:
    """Space vectors (the run's MiniLM) hold 3 groups; the grouping model's vectors of the sample see
    each of them as 2: the clusters are the grouping model's 6, fitted as centroids in the space."""
    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(6), 100)
    space = _blobs(rng, rng.standard_normal((3, 32)), fine // 2, 0.05)
    params = C.ClusterParams(max_fit=600)
    grouping = _blobs(rng, rng.standard_normal((6, 48)), fine[C.fit_sample(600, params)], 0.05)
    result = C.cluster(space, params, grouping=grouping)
    assert normalized_mutual_info_score(fine, result.labels) > 0.95 and len(result.model.ids) == 6
    assert result.model.vectors.shape == (6, 32)

    # A sample of 200: the grouping model sees those, the other 400 are placed in the space.
    coarse = fine // 2
    params = C.ClusterParams(max_fit=200)
    sample = C.fit_sample(600, params)
    assert len(sample) == 200 and np.array_equal(sample, C.fit_sample(600, params))
    grouping = _blobs(rng, rng.standard_normal((3, 48)), coarse[sample], 0.05)
    result = C.cluster(space, params, grouping=grouping)
    assert normalized_mutual_info_score(coarse, result.labels) > 0.95 and (result.labels != C.NOISE).mean() > 0.95
    rest = np.setdiff1d(np.arange(600), sample)
    assert normalized_mutual_info_score(coarse[rest], result.labels[rest]) > 0.95

    with pytest.raises(ValueError, match="grouping vectors for 100 prompts, the fit sample has 200"):
        C.cluster(space, params, grouping=grouping[:100])
