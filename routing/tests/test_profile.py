"""Ψ's shrinkage and intervals (routing/profile.py), on hand-built evidence."""

from __future__ import annotations

import numpy as np
import pytest

from routing.profile import UNKNOWN_MODEL_PRIOR, build

KEYS = ("easy", "hard")
MODELS = ("cheap", "dear")
NO_PRIOR = np.full((2, 2), np.nan)


def test_day_zero_profile_is_the_prior() -> None:
    prior = np.array([[0.1, 0.05], [0.6, 0.2]])
    p = build(KEYS, MODELS, [], prior, shrinkage=8)
    np.testing.assert_allclose(p.psi, prior)
    assert p.informed.all()
    assert (p.samples == 0).all()
    assert (p.low < p.psi).all() and (p.psi < p.high).all()


def test_a_model_unknown_to_the_prior_starts_at_the_default_rate() -> None:
    p = build(KEYS, MODELS, [], NO_PRIOR, shrinkage=8)
    np.testing.assert_allclose(p.psi, UNKNOWN_MODEL_PRIOR)
    assert not p.informed.any()


def test_evidence_dominates_as_it_grows() -> None:
    prior = np.array([[0.1, 0.05], [0.6, 0.2]])
    few = build(KEYS, MODELS, [("hard", "cheap", 0, 4)], prior, shrinkage=8)
    many = build(KEYS, MODELS, [("hard", "cheap", 0, 400)], prior, shrinkage=8)
    assert few.psi[1, 0] < 0.6  # pulled down by 4 successes
    assert many.psi[1, 0] < few.psi[1, 0] < 0.6
    assert many.psi[1, 0] < 0.05
    assert many.high[1, 0] - many.low[1, 0] < few.high[1, 0] - few.low[1, 0]


def test_sparse_cells_move_with_the_models_global_rate() -> None:
    # "cheap" fails everything it was tried on in "easy"; its untried "hard" cell (no prior) is
    # anchored on its global rate, which the evidence has raised.
    p = build(KEYS, MODELS, [("easy", "cheap", 50, 50)], NO_PRIOR, shrinkage=8)
    global_rate = (50 + 8 * UNKNOWN_MODEL_PRIOR) / (50 + 8)
    assert p.psi[1, 0] == pytest.approx(global_rate)
    assert p.samples[1, 0] == 0
    assert p.psi[1, 1] == pytest.approx(UNKNOWN_MODEL_PRIOR)  # "dear" saw nothing


def test_prior_cells_shift_by_the_models_global_surprise() -> None:
    prior = np.array([[0.1, 0.05], [0.3, 0.2]])
    p = build(KEYS, MODELS, [("easy", "cheap", 40, 50)], prior, shrinkage=8)
    # cheap's prior mean is 0.2; evidence says it is far worse, so its untried hard cell rises
    assert p.anchor[1, 0] > 0.3
    assert p.psi[1, 0] == pytest.approx(p.anchor[1, 0])


def test_sources_add_up_and_unknown_rows_are_ignored() -> None:
    rows = [("easy", "cheap", 1, 10), ("easy", "cheap", 3, 10), ("nowhere", "cheap", 5, 5), ("easy", "other", 1, 1)]
    p = build(KEYS, MODELS, rows, NO_PRIOR, shrinkage=0)
    assert p.samples[0, 0] == 20 and p.errors[0, 0] == 4
    assert p.psi[0, 0] == pytest.approx(0.2, abs=1e-3)
    assert p.samples.sum() == 20
