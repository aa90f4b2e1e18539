"""A grouping model besides the packaged MiniLM (OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR).

The other model is built here, offline: the packaged MiniLM followed by a seeded random projection
to 96 dimensions, saved as a sentence-transformers directory. Its vectors are not MiniLM's (another
size, another space): it decides a run's groups on (a sample of) its prompts, while the run's
centroids, the cache of every prompt, the placement of new traces and routing stay in MiniLM's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from datasets import cluster_store, embedding_cache
from datasets.cluster_edits import assign_new, cluster_merge, cluster_split
from datasets.models import Cluster, ClusteringRun
from datasets.prompts import prompts_for
from datasets.runs import run_create
from datasets.tests.cluster_support import banking, finish, messages, write_banking
from routing.services import policy_create

pytestmark = pytest.mark.django_db(transaction=True)
DIMS = 96
MINILM = "all-minilm-l6-v2"


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


def _cached(model: str, pairs: list[tuple[str, str]]) -> int:
    """How many of the pairs' prompts `model` has in the embedding cache (it lives as long as the
    test session), checking the vectors' length."""
    texts, _cut = prompts_for([messages(p) for _i, p in pairs])  # the text embedded: system prompt + last user turn
    found = embedding_cache.lookup([embedding_cache.content_hash(t) for t in texts], model)
    assert {len(v) for v in found.values()} <= {DIMS if model == "minilm-proj96" else 384}
    return len(found)


def test_a_grouping_model_groups_while_minilm_keeps_the_space(
    people: dict[str, Any], settings: Any, other_model: Path
) -> None:
    project = people["project"]
    write_banking(project.id, banking(), minutes_ago=60)
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = str(other_model)

    run = _run(project)
    assert run.status == ClusteringRun.Status.DONE, run.message
    assert run.params["embedding_model"] == MINILM and run.params["grouping_model"] == "minilm-proj96"
    assert f"cached) with {MINILM}, and grouped them with minilm-proj96 (" in run.message
    # The centroids are MiniLM's (384-d); both models' vectors are cached, each under its name.
    clusters = list(Cluster.objects.filter(run=run))
    assert len(clusters) >= 4 and {len(bytes(c.centroid)) for c in clusters} == {4 * 384}
    assert _cached("minilm-proj96", banking()) == 100 and _cached(MINILM, banking()) == 100

    # New traces are placed by MiniLM among the run's centroids; the grouping model is not needed.
    later = banking(per_intent=5, skip=25)
    write_banking(project.id, later, minutes_ago=1)
    placed = assign_new(run=run)
    assert placed["assigned"] + placed["unclustered"] == 20 and placed["assigned"] >= 15, placed
    assert _cached(MINILM, later) == 20 and _cached("minilm-proj96", later) == 0

    # A split regroups with the grouping model too.
    big = sorted(clusters, key=lambda c: -c.size)
    merged = cluster_merge(into=big[0], other=big[1])
    children = cluster_split(cluster=merged)
    assert len(children) >= 2 and sum(c.size for c in children) == merged.size

    # The router embeds requests with MiniLM: it takes this run.
    data = {"name": "p", "candidates": ["openai/gpt-4o"], "clustering_run": run.pk}
    assert policy_create(project=project, user=None, data=data).clustering_run_id == run.pk

    # The clusters page says which model groups.
    browser = Client()
    browser.force_login(people["member"])
    page = browser.get(f"/projects/{project.slug}/clusters").content.decode()
    assert 'grouped by <span id="grouping-model">minilm-proj96</span> (on a sample of 10,000 when' in page


def test_on_more_prompts_than_the_sample_minilm_places_the_rest(
    people: dict[str, Any], settings: Any, other_model: Path
) -> None:
    project = people["project"]
    intent_of = write_banking(
        project.id, banking(("lost_or_stolen_card", "age_limit", "cancel_transfer", "pending_top_up"), 30)
    )
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = str(other_model)
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE = 100

    run = _run(project)
    assert run.status == ClusteringRun.Status.DONE, run.message
    assert "grouped a sample of 100 with minilm-proj96 (" in run.message
    assert f"{MINILM} placed the rest." in run.message
    # The clusters hold one intent each, the 20 prompts MiniLM placed included.
    members = cluster_store.run_memberships(project_id=project.id, run_id=run.pk)
    by_cluster: dict[int, list[str]] = {}
    for trace_id, cid in members.items():
        if cid:
            by_cluster.setdefault(cid, []).append(intent_of[trace_id])
    clustered = sum(len(v) for v in by_cluster.values())
    pure = sum(max(v.count(i) for i in set(v)) for v in by_cluster.values())
    assert len(by_cluster) >= 4 and clustered >= 0.8 * len(members) and pure >= 0.9 * clustered, by_cluster


def test_runs_of_a_whole_other_space_and_other_grouping_models_are_refused(
    people: dict[str, Any], settings: Any, other_model: Path
) -> None:
    project = people["project"]
    write_banking(project.id, banking())
    with pytest.raises(ValidationError) as other:
        run_create(project=project, user=None, filters={}, params={"grouping_model": "all-mpnet-base-v2"})
    assert "This engine groups prompts with no other model" in str(other.value.message_dict["grouping_model"])

    # A run of Nov 30 2026 embedded wholly with the configured model: its centroids are another space.
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = str(other_model)
    run = _run(project)
    assert run.status == ClusteringRun.Status.DONE, run.message
    ClusteringRun.objects.filter(pk=run.pk).update(params={**run.params, "embedding_model": "minilm-proj96"})
    run.refresh_from_db()
    with pytest.raises(ValidationError) as mixed:
        assign_new(run=run)
    assert f"This engine embeds prompts with {MINILM}, not minilm-proj96: start a new run." in mixed.value.messages
    data = {"name": "p", "candidates": ["openai/gpt-4o"], "clustering_run": run.pk}
    with pytest.raises(ValidationError) as refused:
        policy_create(project=project, user=None, data=data)
    assert "embedded its prompts with minilm-proj96" in str(refused.value.message_dict["clustering_run"])

    # Fresh vectors are MiniLM's whatever is configured.
    texts = [p for _i, p in banking(per_intent=1)]
    assert embedding_cache.embeddings_for(texts).vectors.shape == (len(texts), 384)


def test_a_directory_that_is_no_model_fails_the_run_with_the_reason(
    people: dict[str, Any], settings: Any, tmp_path: Path
) -> None:
    project = people["project"]
    write_banking(project.id, banking(per_intent=6))
    settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR = str(tmp_path / "typo")
    run = _run(project)
    assert run.status == ClusteringRun.Status.FAILED
    assert "is not a sentence-transformers model directory (no modules.json)" in run.message
    assert run.params["grouping_model"] == "typo"
    assert "Failed during embedding" in run.message and run.progress == pytest.approx(0.05)  # before MiniLM's pass
