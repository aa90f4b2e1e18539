"""Clustering with another embedding model than the packaged MiniLM (OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR).

The other model is built here, offline: the packaged MiniLM followed by a seeded random projection
to 96 dimensions, saved as a sentence-transformers directory. Its vectors are not MiniLM's (another
size, another space), which is what the run, the cache, the placement of new traces and routing
must keep apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from datasets import embedding_cache
from datasets.cluster_edits import assign_new
from datasets.models import Cluster, ClusteringRun
from datasets.runs import run_create
from datasets.tests.cluster_support import banking, finish, write_banking
from opentracy_site import clickhouse
from routing.services import policy_create

pytestmark = pytest.mark.django_db(transaction=True)
DIMS = 96


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    from gateway.providers.local_embed import model_path

    torch.manual_seed(0)
    transformer = Transformer(str(model_path()), max_seq_length=128)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    projection = Dense(transformer.get_embedding_dimension(), DIMS, activation_function=torch.nn.Identity())
    path = tmp_path_factory.mktemp("models") / "MiniLM-Proj96"
    SentenceTransformer(modules=[transformer, pooling, projection], device="cpu").save(str(path))
    return path


def _run(project: Any) -> ClusteringRun:
    return finish(run_create(project=project, user=None, filters={"range": "24h"}, params={}))


def test_a_configured_model_clusters_caches_and_places_in_its_own_space(
    people: dict[str, Any], settings: Any, other_model: Path
) -> None:
    project = people["project"]
    write_banking(project.id, banking(), minutes_ago=60)
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = str(other_model)

    run = _run(project)
    assert run.status == ClusteringRun.Status.DONE, run.message
    assert run.params["embedding_model"] == "minilm-proj96"
    assert "Embedded 100 new prompts (0 cached) with minilm-proj96." in run.message
    clusters = list(Cluster.objects.filter(run=run))
    assert len(clusters) >= 4 and {len(bytes(c.centroid)) for c in clusters} == {4 * DIMS}
    _c, rows = clickhouse.query(
        "SELECT model, length(vector), count() FROM prompt_embeddings WHERE model = 'minilm-proj96' GROUP BY 1, 2"
    )
    assert rows == [("minilm-proj96", 4 * DIMS, 100)]

    # New traces are embedded by the run's model and placed among its centroids.
    write_banking(project.id, banking(per_intent=5, skip=25), minutes_ago=1)
    placed = assign_new(run=run)
    assert placed["assigned"] + placed["unclustered"] == 20 and placed["assigned"] >= 15, placed

    # The router embeds requests with MiniLM: it cannot use these centroids, and says so.
    data = {"name": "p", "candidates": ["openai/gpt-4o"], "clustering_run": run.pk}
    with pytest.raises(ValidationError) as refused:
        policy_create(project=project, user=None, data=data)
    assert "embedded its prompts with minilm-proj96" in str(refused.value.message_dict["clustering_run"])

    # Back on MiniLM: the cache keeps the models apart, and the old run refuses to place traces
    # rather than mixing two spaces.
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = ""
    texts = [p for _i, p in banking(per_intent=1)]
    fresh = embedding_cache.embeddings_for(texts)
    assert fresh.new == len(texts) and fresh.vectors.shape == (len(texts), 384)
    with pytest.raises(ValidationError) as mixed:
        assign_new(run=run)
    assert "embeds prompts with all-minilm-l6-v2" in " ".join(mixed.value.messages)
    assert "not minilm-proj96: start a new run" in " ".join(mixed.value.messages)


def test_a_directory_that_is_no_model_fails_the_run_with_the_reason(
    people: dict[str, Any], settings: Any, tmp_path: Path
) -> None:
    project = people["project"]
    write_banking(project.id, banking(per_intent=6))
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = str(tmp_path / "typo")
    run = _run(project)
    assert run.status == ClusteringRun.Status.FAILED
    assert "is not a sentence-transformers model directory (no modules.json)" in run.message
    assert run.params["embedding_model"] == "typo"
