"""The decision: embed the prompt, soft-assign it to the policy's clusters, predict each candidate's
error Φ(x)ᵀΨ(m), and pick argmin error + λ·cost among the candidates that meet the constraints.

A policy is compiled once into arrays (`compile_policy`, a few DB and ClickHouse reads) and cached
by routing/cache.py; `decide` is pure numpy over K clusters × M candidates (microseconds), so the
prompt embedding is nearly all of the decision time.

Cost is the request's expected USD (prompt tokens at the input price, the policy's expected output
tokens at the output price) divided by the dearest candidate's, so λ is in error units per "one
dearest-model request": λ = 0.1 accepts 10 points more predicted error to pay nothing instead of
the dearest model's price.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings

from datasets.models import Cluster
from traces.cost import compute_cost

from . import capabilities, prior
from .capabilities import Caps
from .embedder import Embedded
from .models import RoutingPolicy
from .profile import Profile, build

BUILTIN_NAME = "auto"
# λ values the cost–quality curve is drawn at, from "best" (0) to "cheapest".
LAMBDAS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class NoCandidate(Exception):
    """No candidate of the policy can take this request."""

    def __init__(self, policy: str, skipped: dict[str, str]) -> None:
        self.policy, self.skipped = policy, skipped
        reasons = "; ".join(f"{m}: {why}" for m, why in skipped.items()) or "it has no candidates"
        super().__init__(f"Routing policy `{policy}` has no candidate that can take this request ({reasons}).")


@dataclass(frozen=True)
class Compiled:
    project_id: int
    policy_id: int | None  # None: the built-in policy (no policy saved)
    name: str
    lam: float
    temperature: float
    expected_output_tokens: int
    cluster_keys: tuple[str, ...]
    cluster_names: tuple[str, ...]
    centroids: np.ndarray  # (K, 384) unit vectors
    profile: Profile
    in_price: np.ndarray  # (M,) USD per 1k input tokens, NaN unknown
    out_price: np.ndarray  # (M,) USD per 1k output tokens
    caps: tuple[Caps, ...]
    latency_p50_ms: np.ndarray  # (M,) recent p50, NaN unknown
    default_model: str = ""
    max_latency_ms: int | None = None
    required: frozenset[str] = frozenset()
    min_context_tokens: int | None = None

    @property
    def models(self) -> tuple[str, ...]:
        return self.profile.models

    def request_cost(self, prompt_tokens: float) -> np.ndarray:
        """(M,) expected USD of one request; an unknown price counts as the dearest known one."""
        cost = (self.in_price * prompt_tokens + self.out_price * self.expected_output_tokens) / 1000
        known = cost[~np.isnan(cost)]
        return np.where(np.isnan(cost), known.max() if known.size else 1.0, cost)


@dataclass
class Decision:
    policy: str
    chosen: str
    order: list[str]  # eligible candidates, best first: the fallback chain
    cluster: str  # the most likely cluster's key
    cluster_name: str
    cluster_weight: float
    predicted: dict[str, float]  # every candidate's predicted error
    cost_usd: dict[str, float]  # every candidate's expected cost of this request
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tokens: int = 0
    decision_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "model": self.chosen,
            "order": self.order,
            "cluster": {"key": self.cluster, "name": self.cluster_name, "weight": round(self.cluster_weight, 4)},
            "predicted_error": {m: round(v, 4) for m, v in self.predicted.items()},
            "cost_usd": {m: round(v, 8) for m, v in self.cost_usd.items()},
            "skipped": self.skipped,
            "notes": self.notes,
            "prompt_tokens": self.tokens,
            "decision_ms": round(self.decision_ms, 3),
        }


# ---------------------------------------------------------------- compiling


def builtin_policy(project_id: int) -> RoutingPolicy:
    """What `model="auto"` uses when the project has no default policy: the shipped prior's models
    over the shipped clusters (unsaved)."""
    return RoutingPolicy(
        project_id=project_id,
        name=BUILTIN_NAME,
        candidates=list(prior.models()),
        lam=settings.OPENTRACY_ROUTER_DEFAULT_LAMBDA,
    )


def _clusters(policy: RoutingPolicy) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray, np.ndarray | None]:
    """Keys, names and centroids of the policy's cluster set, and the centroids to map the prior
    with (None: the shipped clusters themselves)."""
    if policy.clustering_run_id is None:
        shipped = prior.clusters()
        return tuple(c.key for c in shipped), tuple(c.name for c in shipped), prior.centroids(), None
    found = Cluster.objects.filter(run_id=policy.clustering_run_id, status=Cluster.Status.ACTIVE).order_by(
        "-size", "id"
    )
    rows = [c for c in found if len(bytes(c.centroid)) == 4 * prior.centroids().shape[1]]
    if not rows:  # a run without usable clusters routes on the shipped ones rather than not at all
        shipped = prior.clusters()
        return tuple(c.key for c in shipped), tuple(c.name for c in shipped), prior.centroids(), None
    vectors = np.stack([np.frombuffer(bytes(c.centroid), dtype=np.float32) for c in rows])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return tuple(str(c.identity) for c in rows), tuple(c.name or f"cluster {c.label}" for c in rows), vectors, vectors


def prices(project_id: int, model: str) -> tuple[float, float]:
    """USD per 1k input and output tokens from the pricing table (overrides, then genai-prices)."""
    provider, _, name = model.partition("/")
    provider = provider.partition("@")[0]  # `openai@eu/gpt-4o`: one stored credential, the same price
    inp = compute_cost(project_id=project_id, provider=provider, model=name, prompt=1000, completion=0, cached=0)[2]
    out = compute_cost(project_id=project_id, provider=provider, model=name, prompt=0, completion=1000, cached=0)[2]
    return (np.nan if inp is None else inp), (np.nan if out is None else out)


def compile_policy(
    policy: RoutingPolicy,
    evidence: list[tuple[str, str, float, int]] | None = None,
    latency_p50_ms: dict[str, float] | None = None,
) -> Compiled:
    """The policy as arrays. `evidence` defaults to the policy's saved cells."""
    models = tuple(dict.fromkeys(policy.candidates))
    keys, names, centroids, mapped = _clusters(policy)
    if evidence is None:
        evidence = (
            list(policy.cells.values_list("cluster_key", "model", "errors", "samples")) if policy.pk is not None else []
        )
    profile = build(keys, models, evidence, prior.matrix(mapped, models), policy.shrinkage)
    price = np.array([prices(policy.project_id, m) for m in models], dtype=float).reshape(len(models), 2)
    latency = latency_p50_ms or {}
    return Compiled(
        project_id=policy.project_id,
        policy_id=policy.pk,
        name=policy.name,
        lam=float(policy.lam),
        temperature=max(float(policy.temperature), 1e-3),
        expected_output_tokens=policy.expected_output_tokens,
        cluster_keys=keys,
        cluster_names=names,
        centroids=centroids.astype(np.float32),
        profile=profile,
        in_price=price[:, 0],
        out_price=price[:, 1],
        caps=tuple(capabilities.of(m) for m in models),
        latency_p50_ms=np.array([latency.get(m, np.nan) for m in models], dtype=float),
        default_model=policy.default_model,
        max_latency_ms=policy.max_latency_ms,
        required=frozenset(policy.required_capabilities or ()),
        min_context_tokens=policy.min_context_tokens,
    )


# ---------------------------------------------------------------- deciding


def soft_assign(c: Compiled, vectors: np.ndarray) -> np.ndarray:
    """(n, K) cluster weights: softmax of cosine similarity over the temperature."""
    logits = (vectors @ c.centroids.T) / c.temperature
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


def _skip_reason(c: Compiled, j: int, needs: frozenset[str], tokens: int, reachable: set[str] | None) -> str:
    model = c.models[j]
    if reachable is not None and model not in reachable:
        return "provider not configured"
    missing = (c.required | needs) - c.caps[j].features
    if missing:
        return "lacks " + ", ".join(sorted(missing))
    window = c.caps[j].context_tokens
    if c.min_context_tokens and window < c.min_context_tokens:
        return f"context {window} < required {c.min_context_tokens}"
    if tokens + c.expected_output_tokens > window:
        return f"prompt does not fit its {window}-token context"
    latency = c.latency_p50_ms[j]
    if c.max_latency_ms and not np.isnan(latency) and latency > c.max_latency_ms:
        return f"p50 latency {latency:.0f} ms > {c.max_latency_ms} ms"
    return ""


def decide(
    c: Compiled,
    emb: Embedded,
    *,
    prompt_tokens: int | None = None,
    needs: frozenset[str] = frozenset(),
    reachable: set[str] | None = None,
    lam: float | None = None,
) -> Decision:
    """The candidates in order of error + λ·cost for one embedded prompt. `prompt_tokens` is the
    whole request's size (the embedding sees at most its window); `reachable` the models whose
    provider the project can call (None: all)."""
    tokens = prompt_tokens if prompt_tokens is not None else emb.tokens
    weights = soft_assign(c, emb.vector[None, :])[0]
    predicted = weights @ c.profile.psi
    cost = c.request_cost(tokens)
    norm = cost / cost.max() if cost.size and cost.max() > 0 else np.zeros_like(cost)
    score = predicted + (c.lam if lam is None else lam) * norm
    skipped = {}
    eligible = []
    for j, model in enumerate(c.models):
        reason = _skip_reason(c, j, needs, tokens, reachable)
        if reason:
            skipped[model] = reason
        else:
            eligible.append(j)
    top = int(np.argmax(weights)) if weights.size else 0
    notes = []
    if emb.truncated:
        notes.append(f"prompt truncated to the embedder's {emb.tokens}-token window for routing")
    order = [c.models[j] for j in sorted(eligible, key=lambda j: (score[j], cost[j]))]
    informed = bool(c.profile.informed[:, eligible].any()) if eligible else False
    if order and not informed:
        if c.default_model in order:
            order = [c.default_model, *(m for m in order if m != c.default_model)]
            notes.append(f"no profile data for any candidate: default model {c.default_model}")
        else:
            why = f"default model {c.default_model} cannot take it" if c.default_model else "no default model"
            notes.append(f"no profile data for any candidate and {why}: cheapest first")
            order = [c.models[j] for j in sorted(eligible, key=lambda j: cost[j])]
    if not order:
        raise NoCandidate(c.name, skipped)
    return Decision(
        policy=c.name,
        chosen=order[0],
        order=order,
        cluster=c.cluster_keys[top] if c.cluster_keys else "",
        cluster_name=c.cluster_names[top] if c.cluster_names else "",
        cluster_weight=float(weights[top]) if weights.size else 0.0,
        predicted={m: float(predicted[j]) for j, m in enumerate(c.models)},
        cost_usd={m: float(cost[j]) for j, m in enumerate(c.models)},
        skipped=skipped,
        notes=notes,
        tokens=tokens,
    )


def curve(c: Compiled, vectors: np.ndarray, mean_tokens: float, lams: tuple[float, ...] = LAMBDAS) -> dict[str, Any]:
    """Predicted mean error and cost per request at each λ over a sample of prompt vectors (recent
    traffic), with the share of requests each candidate would get; and the dearest candidate alone,
    the baseline savings are measured against."""
    if not len(vectors) or not c.models:
        return {"points": [], "baseline": None}
    predicted = soft_assign(c, vectors) @ c.profile.psi  # (n, M)
    cost = c.request_cost(mean_tokens)
    norm = cost / cost.max() if cost.max() > 0 else np.zeros_like(cost)
    points = []
    for lam in lams:
        pick = np.argmin(predicted + lam * norm, axis=1)
        shares = np.bincount(pick, minlength=len(c.models)) / len(pick)
        points.append(
            {
                "lam": lam,
                "error": round(float(predicted[np.arange(len(pick)), pick].mean()), 4),
                "cost_usd": float(cost[pick].mean()),
                "shares": {m: round(float(s), 4) for m, s in zip(c.models, shares, strict=True) if s},
            }
        )
    dearest = int(np.argmax(cost))
    baseline = {
        "model": c.models[dearest],
        "error": round(float(predicted[:, dearest].mean()), 4),
        "cost_usd": float(cost[dearest]),
    }
    return {"points": points, "baseline": baseline}
