"""The BOND loss (Sessa et al., "BOND: Aligning LLMs with Best-of-N Distillation", arXiv 2407.14622), as pure
torch functions: no Django, no model code. `distillation/trainer.py` feeds them sequence log-probabilities.

Notation: π the trained policy (the student with its LoRA adapter), π_ref the reference (the student's frozen
base, i.e. the adapter disabled), N the number of teacher candidates per prompt, p̂≤(y) the smoothed mid-rank
quantile of a student sample's score among the teacher candidates' scores.

Our setting is teacher ≠ student, so the objective is a mixture, not the paper's exact Jeffreys divergence:
  L = (1 − β)·forward + β·backward
  forward  = −E_{y ~ BoN(teacher)} log π(y)                                   (SFT on the best-of-N answer)
  backward = −(N − 1)·E_{y ~ π}[log π(y) · sg(R(y) − b)],
             R(y) = log p̂≤(y) − (1/(N − 1))·(log π(y) − log π_ref(y))
The forward term targets BoN(teacher); the backward term's optimum is π_ref·p≤^(N−1) (best-of-N of the
student's base, with quantiles measured against the teacher). See docs/distillation.md.

Every log-probability here is a *sequence* log-probability (sum over the answer's tokens), in both terms:
mixing a token-mean NLL with sequence sums would silently change what β means.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

LOG_16 = math.log(16.0)
T = TypeVar("T")


# ---------------------------------------------------------------- log-probabilities


def sequence_logprob(logits: Tensor, input_ids: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """log π(y|x) = Σ_t mask_t · log softmax(logits_{t−1} / τ)[input_ids_t], one value per row: shape (B,).

    `logits` (B, T, V) come from a causal LM run on `input_ids` (B, T); position t−1 predicts token t.
    `mask` (B, T) is 1 on the answer (assistant) tokens, 0 on the prompt and padding. `temperature` τ must be
    the one the answer was sampled at (a sample drawn at τ has log-probability under logits/τ)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (greedy decoding has no log-probability)")
    scaled = logits[:, :-1, :].float() / temperature
    target = input_ids[:, 1:]
    token_logp = torch.log_softmax(scaled, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask[:, 1:].to(token_logp.dtype)).sum(dim=-1)


def forward_term(seq_logp_best: Tensor) -> Tensor:
    """Forward KL term (paper Eq. 13): −(1/B)·Σ_i log π(y*_i), the NLL of the best-of-N targets y*."""
    return -seq_logp_best.mean()


# ---------------------------------------------------------------- quantiles


def quantile(sample_scores: Tensor, ref_scores: Tensor, ref_mask: Tensor | None = None, smooth: bool = True) -> Tensor:
    """Mid-rank quantile of each sample's score among its k reference scores: shape (B,).

    raw:      p̂ = (#{r_j < s} + 0.5·#{r_j = s}) / k          (mid-rank: ties count half, judges score on
                                                                small integer scales)
    smoothed: p̂ = (#{r_j < s} + 0.5·#{r_j = s} + 0.5) / (k + 1)   (never 0 nor 1, so log p̂ is finite)

    `ref_scores` (B, k); `ref_mask` (B, k), optional, marks the valid entries when rows have different k."""
    s = sample_scores.unsqueeze(-1).to(ref_scores.dtype)
    valid = torch.ones_like(ref_scores, dtype=torch.bool) if ref_mask is None else ref_mask.bool()
    below = ((ref_scores < s) & valid).sum(-1).to(torch.float64)
    equal = ((ref_scores == s) & valid).sum(-1).to(torch.float64)
    k = valid.sum(-1).to(torch.float64)
    if bool((k == 0).any()):
        raise ValueError("every sample needs at least one reference score")
    count = below + 0.5 * equal
    q = (count + 0.5) / (k + 1.0) if smooth else count / k
    return q.to(torch.float32)


def log_quantile(
    sample_scores: Tensor, ref_scores: Tensor, ref_mask: Tensor | None = None, smooth: bool = True
) -> Tensor:
    """log p̂≤(y), the BOND reward (smoothed by default: log 0 = −inf never occurs)."""
    return torch.log(quantile(sample_scores, ref_scores, ref_mask, smooth))


# ---------------------------------------------------------------- backward (policy-gradient) term


def leave_one_out_baseline(returns: Tensor) -> Tensor:
    """b_i = (Σ_j R_j − R_i) / (B − 1), the mean return of the other samples; 0 for a batch of one."""
    b = returns.shape[0]
    if b < 2:
        return torch.zeros_like(returns)
    return (returns.sum() - returns) / (b - 1)


def backward_term(
    seq_logp_policy: Tensor, seq_logp_ref: Tensor, log_q: Tensor, n: int | Tensor
) -> tuple[Tensor, dict[str, float]]:
    """Backward KL term (paper Eq. 15) as a surrogate loss whose gradient is the policy gradient:

        R_i   = log p̂_i − (1/(N_i − 1))·(log π(y_i) − log π_ref(y_i))
        A_i   = sg(R_i − b_i),  b_i = leave-one-out mean of the other returns in the batch
        loss  = −(1/B)·Σ_i (N_i − 1)·A_i·log π(y_i)          ∇loss = −(N−1)·E[∇log π · (R − b)]

    y_i are the policy's own samples; gradient flows only through `seq_logp_policy` (the advantage is
    detached). N < 2 is refused (1/(N−1) is undefined; we do not switch to the undivided form silently).
    `n` is an int or a (B,) tensor when prompts have different numbers of teacher candidates."""
    n_t = torch.as_tensor(n, dtype=torch.float32, device=seq_logp_policy.device).expand_as(seq_logp_policy)
    if bool((n_t < 2).any()):
        raise ValueError("the BOND backward term needs N >= 2 teacher candidates per prompt (1/(N-1) is undefined)")
    with torch.no_grad():
        kl = seq_logp_policy.detach().float() - seq_logp_ref.detach().float()  # log π − log π_ref, per sample
        returns = log_q.float() - kl / (n_t - 1.0)
        advantage = returns - leave_one_out_baseline(returns)
    loss = -((n_t - 1.0) * advantage * seq_logp_policy.float()).mean()
    stats = {
        "backward": float(loss.detach()),
        "reward": float(returns.mean()),
        "log_quantile": float(log_q.detach().float().mean()),
        "kl": float(kl.mean()),
        # 0 when every sample got the same log p̂ (e.g. all below every teacher candidate early on): the
        # baseline then cancels the reward and only the forward term teaches.
        "reward_spread": float(log_q.detach().max() - log_q.detach().min()),
    }
    return loss, stats


# ---------------------------------------------------------------- J-BOND (paper Algorithm 2, n = 2)


def jbond_reward(policy_score: Tensor, anchor_scores: Tensor) -> Tensor:
    """r_J(y) = −log 16 if r(y) < min(r(y'_1), r(y'_2)) else 0; `anchor_scores` (B, 2)."""
    worse = policy_score < anchor_scores.min(dim=-1).values
    return torch.where(worse, torch.full_like(policy_score, -LOG_16), torch.zeros_like(policy_score)).float()


def jbond_return(r_j: Tensor, seq_logp_policy: Tensor, seq_logp_anchor: Tensor) -> Tensor:
    """R = r_J − (log π(y) − log π_anchor(y)) (N − 1 = 1 for n = 2), detached."""
    return (r_j.float() - (seq_logp_policy.detach().float() - seq_logp_anchor.detach().float())).detach()


def jbond_kl_term(seq_logp_policy: Tensor, seq_logp_anchor: Tensor) -> Tensor:
    """Surrogate for KL(π ‖ π_anchor) on policy samples: (1/B)·Σ_i log π(y_i)·sg(log π(y_i) − log π_anchor(y_i)).

    Its gradient is E_π[∇log π·(log π − log π_anchor)] = ∇KL(π ‖ π_anchor) (the E_π[∇log π] = 0 part dropped).
    The sign is +: the v1 text prints a minus, which is a typo (it would push away from the anchor)."""
    gap = (seq_logp_policy.detach().float() - seq_logp_anchor.detach().float()).detach()
    return (seq_logp_policy.float() * gap).mean()


def jbond_backward_term(
    seq_logp_policy: Tensor, seq_logp_anchor: Tensor, r_j: Tensor, gamma: float = 0.0
) -> tuple[Tensor, dict[str, float]]:
    """loss = −(1/B)·Σ_i sg(R_i − b_i)·log π(y_i) + γ·jbond_kl_term, b the leave-one-out baseline."""
    returns = jbond_return(r_j, seq_logp_policy, seq_logp_anchor)
    advantage = (returns - leave_one_out_baseline(returns)).detach()
    loss = -(advantage * seq_logp_policy.float()).mean()
    if gamma:
        loss = loss + gamma * jbond_kl_term(seq_logp_policy, seq_logp_anchor)
    kl = (seq_logp_policy.detach() - seq_logp_anchor.detach()).float()
    stats = {
        "backward": float(loss.detach()),
        "reward": float(returns.mean()),
        "log_quantile": float(r_j.float().mean()),
        "kl_anchor": float(kl.mean()),
        "reward_spread": float(r_j.max() - r_j.min()),
    }
    return loss, stats


@torch.no_grad()
def ema_update(anchor_params: Iterable[Tensor], params: Iterable[Tensor], eta: float = 0.02) -> None:
    """θ_anchor ← (1 − η)·θ_anchor + η·θ, in place.

    With LoRA the parameters are the A and B factors: averaging A and B separately is not averaging the update
    BA (the EMA of a product is not the product of EMAs). Accepted, as in most LoRA EMA implementations."""
    for anchor, param in zip(anchor_params, params, strict=True):
        anchor.mul_(1.0 - eta).add_(param.detach().to(anchor.dtype), alpha=eta)


# ---------------------------------------------------------------- the combined loss


def bond_loss(
    *,
    seq_logp_best: Tensor,
    beta: float,
    seq_logp_policy: Tensor | None = None,
    seq_logp_ref: Tensor | None = None,
    log_q: Tensor | None = None,
    n: int | Tensor = 2,
) -> tuple[Tensor, dict[str, float]]:
    """L = (1 − β)·forward + β·backward. β = 0 is plain SFT (the backward inputs may be omitted); β = 1 is the
    backward term alone. Stats: forward, backward, loss, reward (mean R), log_quantile (mean log p̂), kl (mean of
    log π − log π_ref over the policy samples, a Monte-Carlo estimate of KL(π ‖ π_ref))."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError("beta must be in [0, 1]")
    fwd = forward_term(seq_logp_best)
    stats = {"forward": float(fwd.detach()), "backward": 0.0, "reward": 0.0, "log_quantile": 0.0, "kl": 0.0}
    loss = (1.0 - beta) * fwd
    if beta > 0.0:
        if seq_logp_policy is None or seq_logp_ref is None or log_q is None:
            raise ValueError("beta > 0 needs the policy samples' log π, log π_ref and log-quantiles")
        bwd, bstats = backward_term(seq_logp_policy, seq_logp_ref, log_q, n)
        loss = loss + beta * bwd
        stats.update(bstats)
    stats["loss"] = float(loss.detach())
    return loss, stats


# ---------------------------------------------------------------- the SFT target


def pick_best(scores: Sequence[float], candidates: Sequence[T], rng: random.Random, human_edit: T | None = None) -> T:
    """The best-of-N target: a human edit wins; else the highest score, ties (all N tied included) broken by a
    random pick from `rng` (seeded by the caller) — never the first one, which would bias towards an order."""
    if human_edit is not None:
        return human_edit
    if not candidates or len(scores) != len(candidates):
        raise ValueError("pick_best needs one score per candidate and at least one candidate")
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    return candidates[tied[0] if len(tied) == 1 else rng.choice(tied)]
