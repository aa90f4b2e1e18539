"""The BOND loss on tiny hand-made tensors, checked against values computed by hand (arithmetic in comments),
and one test per pitfall listed in BOND.md."""

from __future__ import annotations

import math
import random

import pytest
import torch

from distillation import bond

LN2 = math.log(2.0)


def approx(value: float, expected: float, tol: float = 1e-5) -> bool:
    return abs(value - expected) < tol


# ---------------------------------------------------------------- sequence log-probabilities


def test_sequence_logprob_by_hand() -> None:
    # Vocabulary {0, 1}; tokens [0, 1, 0]; the answer is tokens 1 and 2 (mask [0, 1, 1]).
    # Position 0 logits [0, 0]        -> p(token 1) = 1/2 -> log(1/2)
    # Position 1 logits [log 3, 0]    -> p(token 0) = 3/4 -> log(3/4)
    # Position 2 logits predict nothing (no token 3). Sum: log(1/2) + log(3/4) = log(3/8).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    ids = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[0, 1, 1]])
    assert approx(float(bond.sequence_logprob(logits, ids, mask)[0]), math.log(3 / 8))
    # Only the last answer token: log(3/4).
    assert approx(float(bond.sequence_logprob(logits, ids, torch.tensor([[0, 0, 1]]))[0]), math.log(3 / 4))


def test_sequence_logprob_uses_the_sampling_temperature() -> None:
    # Pitfall: log π must be computed at the temperature the sample was drawn at.
    # Logits [0, 0], [log 9, 0] at τ = 2 become [0, 0], [log 3, 0]: the same log(3/8) as above.
    logits = torch.tensor([[[0.0, 0.0], [math.log(9.0), 0.0], [0.0, 0.0]]])
    ids, mask = torch.tensor([[0, 1, 0]]), torch.tensor([[0, 1, 1]])
    assert approx(float(bond.sequence_logprob(logits, ids, mask, temperature=2.0)[0]), math.log(3 / 8))
    # At τ = 1: log(1/2) + log(9/10), a different number.
    assert approx(float(bond.sequence_logprob(logits, ids, mask)[0]), math.log(0.5 * 0.9))
    with pytest.raises(ValueError):
        bond.sequence_logprob(logits, ids, mask, temperature=0.0)


def test_same_scale_sequence_sums_in_both_terms() -> None:
    # Pitfall: both terms use sequence sums. Uniform logits over 2 tokens: every token costs log 2.
    # A 2-token answer -> log π = −2·log 2, a 4-token answer -> −4·log 2 (a token mean would give log 2 for both).
    logits = torch.zeros(2, 5, 2)
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]])
    logp = bond.sequence_logprob(logits, ids, mask)
    assert approx(float(logp[0]), -2 * LN2) and approx(float(logp[1]), -4 * LN2)
    # forward = mean NLL of the sequences = (2 + 4)/2 · log 2 = 3 log 2.
    assert approx(float(bond.forward_term(logp)), 3 * LN2)
    # The backward term is fed the very same kind of number: its KL estimate is in nats per sequence.
    _, stats = bond.backward_term(logp, logp - 1.0, torch.log(torch.tensor([0.5, 0.5])), n=2)
    assert approx(stats["kl"], 1.0)  # log π − log π_ref = 1 nat per sequence, not per token


def test_forward_term_by_hand() -> None:
    # −mean(−3, −5) = 4
    assert approx(float(bond.forward_term(torch.tensor([-3.0, -5.0]))), 4.0)


# ---------------------------------------------------------------- quantiles


def test_quantile_mid_rank_and_smoothing_by_hand() -> None:
    refs = torch.tensor(
        [
            [1.0, 2.0, 2.0, 3.0],  # s = 2: #< = 1, #= = 2 -> count 2; raw 2/4 = 0.5; smoothed 2.5/5 = 0.5
            [1.0, 2.0, 3.0, 4.0],  # s = 0: count 0; raw 0 (log 0!); smoothed 0.5/5 = 0.1
            [1.0, 2.0, 3.0, 4.0],  # s = 5: count 4; raw 1; smoothed 4.5/5 = 0.9
            [3.0, 3.0, 3.0, 3.0],  # s = 3, all tied: count 0 + 0.5·4 = 2; raw 0.5; smoothed 2.5/5 = 0.5
        ]
    )
    samples = torch.tensor([2.0, 0.0, 5.0, 3.0])
    raw = bond.quantile(samples, refs, smooth=False)
    smoothed = bond.quantile(samples, refs)
    assert torch.allclose(raw, torch.tensor([0.5, 0.0, 1.0, 0.5]))
    assert torch.allclose(smoothed, torch.tensor([0.5, 0.1, 0.9, 0.5]))


def test_log_quantile_never_log_zero() -> None:
    # Pitfall: early on every student sample is below every teacher candidate -> raw p̂ = 0 -> log 0 = −inf.
    refs = torch.tensor([[7.0] * 16])
    assert torch.isinf(bond.log_quantile(torch.tensor([1.0]), refs, smooth=False)).all()
    lq = bond.log_quantile(torch.tensor([1.0]), refs)
    assert torch.isfinite(lq).all() and approx(float(lq[0]), math.log(0.5 / 17))  # (0 + 0.5)/(16 + 1)


def test_quantile_ties_use_the_mid_rank() -> None:
    # Pitfall: judges score on small integer scales. With #≤ instead of the mid-rank a tie with all of
    # [4, 4, 4] would count as the top (3/3); the mid-rank says the middle: (0 + 0.5·3)/3 = 0.5.
    q = bond.quantile(torch.tensor([4.0]), torch.tensor([[4.0, 4.0, 4.0]]), smooth=False)
    assert approx(float(q[0]), 0.5)


def test_quantile_with_ragged_reference_sets() -> None:
    # Row 0 has k = 2 valid refs [1, 2] (the rest padding): s = 2 -> count 1 + 0.5 = 1.5 -> (1.5 + 0.5)/3 = 2/3.
    refs = torch.tensor([[1.0, 2.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    q = bond.quantile(torch.tensor([2.0, 2.0]), refs, ref_mask=mask)
    assert approx(float(q[0]), 2 / 3) and approx(float(q[1]), (1.5 + 0.5) / 5)
    with pytest.raises(ValueError):
        bond.quantile(torch.tensor([1.0]), torch.tensor([[1.0]]), ref_mask=torch.tensor([[0]]))


# ---------------------------------------------------------------- backward term


def test_backward_term_by_hand() -> None:
    # B = 2, N = 3 -> 1/(N−1) = 1/2.
    # log π = [−1, −2], log π_ref = [−1.5, −1] -> log π − log π_ref = [0.5, −1]
    # log p̂ = [log 0.5, log 0.25]
    # R = [log 0.5 − 0.25, log 0.25 + 0.5]
    # leave-one-out: b_0 = R_1, b_1 = R_0 -> A_0 = R_0 − R_1 = log 2 − 0.75 = −0.0568528, A_1 = −A_0
    # loss = −(N−1)·mean(A·log π) = −2·(A_0·(−1) + A_1·(−2))/2 = A_0 + 2·A_1 = −A_0 = 0.75 − log 2
    # ∂loss/∂log π_i = −(N−1)·A_i/B = −A_i -> [0.75 − log 2, log 2 − 0.75]
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref = torch.tensor([-1.5, -1.0], requires_grad=True)
    log_q = torch.log(torch.tensor([0.5, 0.25])).requires_grad_(True)
    loss, stats = bond.backward_term(logp, ref, log_q, n=3)
    assert approx(float(loss.detach()), 0.75 - LN2)
    loss.backward()
    assert logp.grad is not None
    assert torch.allclose(logp.grad, torch.tensor([0.75 - LN2, LN2 - 0.75]))
    # Gradient only through log π: the reference and the reward get none (advantage detached).
    assert ref.grad is None and log_q.grad is None
    r0, r1 = math.log(0.5) - 0.25, math.log(0.25) + 0.5
    assert approx(stats["reward"], (r0 + r1) / 2)
    assert approx(stats["kl"], (0.5 - 1.0) / 2)
    assert approx(stats["log_quantile"], (math.log(0.5) + math.log(0.25)) / 2)
    assert approx(stats["backward"], 0.75 - LN2)


def test_backward_gradient_flows_only_through_log_pi_from_logits() -> None:
    # Same check end to end from logits: the reference model's logits get no gradient.
    torch.manual_seed(0)
    policy_logits = torch.randn(3, 4, 5, requires_grad=True)
    ref_logits = torch.randn(3, 4, 5, requires_grad=True)
    ids = torch.randint(0, 5, (3, 4))
    mask = torch.tensor([[0, 1, 1, 1]] * 3)
    logp = bond.sequence_logprob(policy_logits, ids, mask)
    ref = bond.sequence_logprob(ref_logits, ids, mask)
    loss, _ = bond.backward_term(logp, ref, torch.log(torch.tensor([0.1, 0.5, 0.9])), n=4)
    loss.backward()
    assert ref_logits.grad is None
    assert policy_logits.grad is not None and float(policy_logits.grad.abs().sum()) > 0


def test_constant_reward_is_cancelled_by_the_baseline() -> None:
    # Pitfall: every sample below every teacher candidate -> the same log p̂ for all; at the start π = π_ref,
    # so R is constant, the leave-one-out baseline equals it, and the backward gradient is exactly zero.
    logp = torch.tensor([-3.0, -7.0, -2.0], requires_grad=True)
    log_q = torch.full((3,), math.log(0.5 / 17))
    loss, stats = bond.backward_term(logp, logp.detach().clone(), log_q, n=8)
    loss.backward()
    assert logp.grad is not None and torch.equal(logp.grad, torch.zeros(3))
    assert stats["reward_spread"] == 0.0  # logged, so a run can show that only the forward term teaches


def test_batch_of_one_has_zero_baseline() -> None:
    # B = 1: b = 0, so A = R = log 0.5 − (1/1)·0 = log 0.5; loss = −1·A·log π = −(log 0.5)(−1) = log 0.5.
    logp = torch.tensor([-1.0], requires_grad=True)
    loss, _ = bond.backward_term(logp, torch.tensor([-1.0]), torch.tensor([math.log(0.5)]), n=2)
    assert approx(float(loss.detach()), math.log(0.5))
    assert torch.equal(bond.leave_one_out_baseline(torch.tensor([4.0])), torch.tensor([0.0]))
    # B = 3: b_i = mean of the others: [ (2+3)/2, (1+3)/2, (1+2)/2 ]
    assert torch.allclose(bond.leave_one_out_baseline(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([2.5, 2.0, 1.5]))


def test_n_below_two_is_refused() -> None:
    # Pitfall: N = 1 makes 1/(N−1) undefined: refused with a clear error (no silent switch of formula).
    with pytest.raises(ValueError, match="N >= 2"):
        bond.backward_term(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-0.5]), n=1)
    with pytest.raises(ValueError, match="N >= 2"):
        bond.backward_term(torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0]), torch.zeros(2), torch.tensor([4, 1]))


def test_per_prompt_n() -> None:
    # N = [2, 3]: R = log p̂ − kl/(N−1) = [0 − 1/1, 0 − 1/2] = [−1, −0.5]; A = [−0.5, 0.5]
    # loss = −mean((N−1)·A·log π) = −((1)(−0.5)(−1) + (2)(0.5)(−1))/2 = −(0.5 − 1)/2 = 0.25
    logp = torch.tensor([-1.0, -1.0])
    loss, _ = bond.backward_term(logp, logp - 1.0, torch.zeros(2), torch.tensor([2, 3]))
    assert approx(float(loss.detach()), 0.25)


# ---------------------------------------------------------------- combined loss


def test_bond_loss_mixture_and_sft_special_case() -> None:
    best = torch.tensor([-3.0, -5.0], requires_grad=True)  # forward = 4
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref, log_q = torch.tensor([-1.5, -1.0]), torch.log(torch.tensor([0.5, 0.25]))
    # β = 0: plain SFT, the backward inputs are not needed.
    loss, stats = bond.bond_loss(seq_logp_best=best, beta=0.0)
    assert approx(float(loss.detach()), 4.0) and stats["forward"] == stats["loss"] and stats["backward"] == 0.0
    # β = 0.5: 0.5·4 + 0.5·(0.75 − log 2)  (backward from test_backward_term_by_hand)
    loss, stats = bond.bond_loss(seq_logp_best=best, beta=0.5, seq_logp_policy=logp, seq_logp_ref=ref, log_q=log_q, n=3)
    assert approx(float(loss.detach()), 0.5 * 4.0 + 0.5 * (0.75 - LN2))
    assert set(stats) >= {"forward", "backward", "loss", "reward", "log_quantile", "kl"}
    assert approx(stats["kl"], -0.25)
    loss.backward()
    assert best.grad is not None and torch.allclose(best.grad, torch.tensor([-0.25, -0.25]))  # −(1−β)/B
    with pytest.raises(ValueError):
        bond.bond_loss(seq_logp_best=best, beta=0.5)
    with pytest.raises(ValueError):
        bond.bond_loss(seq_logp_best=best, beta=1.5)


# ---------------------------------------------------------------- J-BOND


def test_jbond_reward_and_return_by_hand() -> None:
    # Below both anchors -> −log 16; equal to the lower anchor is not below -> 0.
    r = bond.jbond_reward(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[2.0, 3.0], [2.0, 3.0], [3.0, 2.0]]))
    assert torch.allclose(r, torch.tensor([-math.log(16.0), 0.0, 0.0]))
    # R = r_J − (log π − log π_anchor) = [−log 16 − (−1 + 2), 0 − (−3 + 3)] = [−log 16 − 1, 0]
    ret = bond.jbond_return(r[:2], torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -3.0]))
    assert torch.allclose(ret, torch.tensor([-math.log(16.0) - 1.0, 0.0]))


def test_jbond_kl_gradient_sign_matches_autograd_of_the_exact_kl() -> None:
    # Pitfall: the v1 paper prints −∇log π·(log π − log π_anchor); the right sign is +.
    # A 3-outcome categorical policy: the exact KL(π ‖ π_a) = Σ_y π(y)(log π(y) − log π_a(y)) by autograd,
    # against E_π[∇ jbond_kl_term] computed exactly by weighting each outcome with sg(π(y)).
    theta = torch.tensor([0.3, -1.0, 0.8], requires_grad=True)
    anchor = torch.log_softmax(torch.tensor([0.0, 0.5, -0.2]), dim=0)

    exact = (torch.softmax(theta, 0) * (torch.log_softmax(theta, 0) - anchor)).sum()
    (g_exact,) = torch.autograd.grad(exact, theta)

    logp = torch.log_softmax(theta, 0)
    probs = logp.exp().detach()
    surrogate = torch.stack([probs[y] * bond.jbond_kl_term(logp[y : y + 1], anchor[y : y + 1]) for y in range(3)]).sum()
    (g_surrogate,) = torch.autograd.grad(surrogate, theta)
    assert torch.allclose(g_surrogate, g_exact, atol=1e-6)

    # Finite difference: a small step against the surrogate's gradient lowers the KL; the minus-sign version raises it.
    def kl(t: torch.Tensor) -> float:
        return float((torch.softmax(t, 0) * (torch.log_softmax(t, 0) - anchor)).sum())

    eps = 1e-2
    with torch.no_grad():
        assert kl(theta - eps * g_surrogate) < kl(theta) < kl(theta + eps * g_surrogate)
        # central difference of the KL along the gradient direction matches the gradient's squared norm
        fd = (kl(theta + 1e-4 * g_surrogate) - kl(theta - 1e-4 * g_surrogate)) / 2e-4
        assert abs(fd - float(g_surrogate @ g_exact)) < 1e-4


def test_jbond_backward_term_by_hand() -> None:
    # r_J = [−log 16, 0]; log π = [−1, −2]; log π_a = [−1, −2] -> R = r_J; A = [−log 16, +log 16]·... leave-one-out:
    # A_0 = −log 16 − 0 = −log 16, A_1 = 0 + log 16 = log 16; loss = −mean(A·log π) = −(log16 − 2 log16)/2 = log16/2
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss, stats = bond.jbond_backward_term(logp, logp.detach().clone(), torch.tensor([-math.log(16.0), 0.0]))
    assert approx(float(loss.detach()), math.log(16.0) / 2)
    assert stats["kl_anchor"] == 0.0
    # With γ > 0 and π = π_anchor the KL term adds log π·0 = 0.
    loss_g, _ = bond.jbond_backward_term(logp, logp.detach().clone(), torch.tensor([-math.log(16.0), 0.0]), gamma=0.1)
    assert approx(float(loss_g.detach()), float(loss.detach()))


def test_ema_update_by_hand() -> None:
    # η = 0.02: 0.98·1 + 0.02·3 = 1.04 ; 0.98·2 + 0.02·0 = 1.96
    anchor = [torch.tensor([1.0, 2.0])]
    bond.ema_update(anchor, [torch.tensor([3.0, 0.0])])
    assert torch.allclose(anchor[0], torch.tensor([1.04, 1.96]))
    # η = 0.5: the midpoint
    anchor = [torch.tensor([1.0, 2.0])]
    bond.ema_update(anchor, [torch.tensor([3.0, 0.0], requires_grad=True)], eta=0.5)
    assert torch.allclose(anchor[0], torch.tensor([2.0, 1.0])) and not anchor[0].requires_grad


# ---------------------------------------------------------------- the SFT target


def test_pick_best() -> None:
    rng = random.Random(0)
    assert bond.pick_best([1.0, 5.0, 3.0], ["a", "b", "c"], rng) == "b"
    assert bond.pick_best([1.0, 5.0, 3.0], ["a", "b", "c"], rng, human_edit="edited") == "edited"  # edit wins
    with pytest.raises(ValueError):
        bond.pick_best([1.0], ["a", "b"], rng)


def test_pick_best_all_tied_is_a_seeded_random_pick() -> None:
    # Pitfall: all N tied -> pick at random (never always the first), reproducibly for a seed.
    picks = {bond.pick_best([4.0] * 4, ["a", "b", "c", "d"], random.Random(seed)) for seed in range(40)}
    assert len(picks) > 1
    assert bond.pick_best([4.0] * 4, list("abcd"), random.Random(7)) == bond.pick_best(
        [4.0] * 4, list("abcd"), random.Random(7)
    )
    # Ties at the top only: the pick stays among the tied best.
    assert {bond.pick_best([2.0, 4.0, 4.0], list("abc"), random.Random(s)) for s in range(40)} == {"b", "c"}
