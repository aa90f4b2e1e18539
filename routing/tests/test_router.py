"""The decision (routing/router.py) on a hand-built profile, and the shipped prior's clusters."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from gateway.models import ModelPrice, Project
from routing import embedder, prior, router
from routing.embedder import Embedded
from routing.models import ProfileCell, RoutingPolicy

pytestmark = pytest.mark.django_db

CHEAP, DEAR, TOOLLESS = "openai/fake-cheap", "openai/fake-dear", "local/fake-student"
CODE, SCIENCE = "prior:code", "prior:expert-science"


@pytest.fixture
def policy() -> RoutingPolicy:
    project = Project.objects.create(slug="routing", name="Routing")
    for model, price in ((CHEAP, "0.1"), (DEAR, "10")):
        ModelPrice.objects.create(project=project, model=model, input_per_mtok=Decimal(price), output_per_mtok=price)
    p = RoutingPolicy.objects.create(project=project, name="p", candidates=[CHEAP, DEAR], lam=0.1, shrinkage=2)
    cells = [(CODE, CHEAP, 1, 100), (CODE, DEAR, 1, 100), (SCIENCE, CHEAP, 80, 100), (SCIENCE, DEAR, 10, 100)]
    for key, model, errors, n in cells:
        source = ProfileCell.Source.PROFILE_RUN
        ProfileCell.objects.create(policy=p, cluster_key=key, model=model, source=source, errors=errors, samples=n)
    return p


def _at(key: str) -> Embedded:
    """A prompt sitting exactly on a shipped cluster's centroid."""
    i = [c.key for c in prior.clusters()].index(key)
    return Embedded(prior.centroids()[i], tokens=20, truncated=False)


def test_easy_prompts_go_cheap_and_hard_ones_go_dear(policy: RoutingPolicy) -> None:
    c = router.compile_policy(policy)
    easy = router.decide(c, _at(CODE))
    hard = router.decide(c, _at(SCIENCE))
    assert easy.chosen == CHEAP and easy.cluster == CODE
    assert hard.chosen == DEAR and hard.cluster == SCIENCE
    assert hard.order == [DEAR, CHEAP]  # the fallback chain
    assert hard.predicted[CHEAP] > 0.5 > hard.predicted[DEAR]
    assert hard.cost_usd[DEAR] == pytest.approx(100 * hard.cost_usd[CHEAP])


def test_lambda_trades_quality_for_cost(policy: RoutingPolicy) -> None:
    c = router.compile_policy(policy)
    assert router.decide(c, _at(SCIENCE), lam=0.0).chosen == DEAR
    assert router.decide(c, _at(SCIENCE), lam=5.0).chosen == CHEAP
    points = router.curve(c, np.stack([_at(CODE).vector, _at(SCIENCE).vector]), 20)["points"]
    costs = [p["cost_usd"] for p in points]
    errors = [p["error"] for p in points]
    assert costs == sorted(costs, reverse=True)  # higher λ never costs more
    assert errors == sorted(errors)  # ... and never predicts fewer errors


def test_constraints_skip_candidates(policy: RoutingPolicy) -> None:
    mini = "openai/gpt-4o-mini"  # listed in routing/capabilities.py; the fakes are not, so lack tools
    policy.candidates = [CHEAP, DEAR, mini]
    c = router.compile_policy(policy)
    d = router.decide(c, _at(CODE), needs=frozenset({"tools"}), reachable={CHEAP, mini})
    assert d.order == [mini]
    assert d.skipped == {DEAR: "provider not configured", CHEAP: "lacks tools"}
    with pytest.raises(router.NoCandidate, match=r"`p`.*fake-cheap: provider not configured"):
        router.decide(c, _at(CODE), reachable={DEAR}, needs=frozenset({"vision"}))


def test_a_prompt_that_does_not_fit_a_context_window_skips_it(policy: RoutingPolicy) -> None:
    policy.candidates = ["openai/gpt-4o-mini", TOOLLESS]
    d = router.decide(router.compile_policy(policy), _at(CODE), prompt_tokens=100_000)
    assert d.order == ["openai/gpt-4o-mini"]
    assert "8192-token context" in d.skipped[TOOLLESS]


def test_no_profile_data_falls_back_to_the_default_model_and_says_so() -> None:
    project = Project.objects.create(slug="empty", name="Empty")
    policy = RoutingPolicy(project=project, name="cold", candidates=[CHEAP, DEAR], default_model=DEAR)
    d = router.decide(router.compile_policy(policy), _at(CODE))
    assert d.chosen == DEAR
    assert "no profile data" in d.notes[0]
    unreachable = router.decide(router.compile_policy(policy), _at(CODE), reachable={CHEAP})
    assert unreachable.order == [CHEAP]
    assert "default model openai/fake-dear cannot take it: cheapest first" in unreachable.notes[0]


def test_builtin_policy_routes_on_the_prior_from_day_zero() -> None:
    project = Project.objects.create(slug="day0", name="Day 0")
    c = router.compile_policy(router.builtin_policy(project.id))
    assert set(c.models) == set(prior.models())
    easy = router.decide(c, embedder.embed("A recipe needs 3 eggs for 4 people. How many eggs for 12 people?"))
    hard = router.decide(c, embedder.embed("Which enzyme is the rate-limiting step of heme synthesis in the liver?"))
    assert easy.cluster == "prior:word-problems" and hard.cluster == "prior:expert-science"
    assert easy.cost_usd[easy.chosen] < hard.cost_usd[hard.chosen]
    assert hard.predicted[hard.chosen] < hard.predicted[easy.chosen]


def test_prior_data_cites_its_sources_and_maps_every_benchmark() -> None:
    data = prior.data()
    assert data["compiled"] and all(s["url"].startswith("https://") and s["published"] for s in data["sources"])
    source_ids = {s["id"] for s in data["sources"]}
    keys = {c.key for c in prior.clusters()}
    assert set(data["benchmarks"].values()) == keys
    for model, scores in data["scores"].items():
        assert scores["source"] in source_ids, model
        assert all(0 < v <= 100 for k, v in scores.items() if k != "source")
    assert prior.errors("openai/gpt-4o")["prior:code"] == pytest.approx(1 - 0.902)


def test_embedder_matches_sentence_transformers_and_truncates() -> None:
    from gateway.providers import local_embed

    texts = ["How do I reset my card PIN?", "What is the capital of Australia?"]
    reference = local_embed.load().encode(texts, normalize_embeddings=True, show_progress_bar=False)
    got = embedder.embed_many(texts)
    assert (got * reference).sum(axis=1).min() > 0.9999
    long = embedder.embed("word " * 1000)
    assert long.truncated and long.tokens == embedder.WINDOW
    assert not embedder.embed(texts[0]).truncated
