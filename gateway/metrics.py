"""Prometheus metrics for the gateway, served by GET /metrics (opentracy_site/health.py).

Counters and histograms are per process (one registry); in distributed mode Prometheus scrapes each
server process and sums. Label values are bounded: provider and model come from the engine's own
resolution, never from free text.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .errors import GatewayError

REGISTRY = CollectorRegistry(auto_describe=True)
# Upstream LLM latencies span milliseconds (a cached answer) to minutes (a long generation).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "opentracy_requests", "Requests answered by /v1.", ["endpoint", "provider", "model", "status"], registry=REGISTRY
)
ERRORS = Counter(
    "opentracy_errors", "Failed requests by error class.", ["endpoint", "provider", "error_class"], registry=REGISTRY
)
LATENCY = Histogram(
    "opentracy_request_latency_seconds",
    "Whole request latency (upstream included).",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
TTFT = Histogram(
    "opentracy_ttft_seconds",
    "Time to the first streamed token.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "opentracy_overhead_seconds",
    "Time spent in the engine itself (request latency minus upstream time).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "opentracy_upstream_attempts",
    "Upstream calls of requests that needed more than one or failed, by outcome.",
    ["provider", "model", "status"],
    registry=REGISTRY,
)
RETRIES = Counter("opentracy_retries", "Retries of the same target.", ["endpoint"], registry=REGISTRY)
FALLBACKS = Counter("opentracy_fallbacks", "Moves to a fallback target.", ["endpoint", "alias"], registry=REGISTRY)
COOLDOWNS = Counter("opentracy_cooldowns", "Cooldowns started (circuit breaker trips).", registry=REGISTRY)
COOLING = Gauge("opentracy_targets_cooling", "Targets (per credential) cooling down now.", registry=REGISTRY)
TOKENS = Counter(
    "opentracy_tokens", "Tokens by provider, model and kind.", ["provider", "model", "kind"], registry=REGISTRY
)
COST = Counter("opentracy_cost_usd", "Spend in USD (priced requests).", ["provider", "model"], registry=REGISTRY)
TOKEN_KINDS = ("prompt_tokens", "completion_tokens", "cached_tokens")
LIMITED = Counter(
    "opentracy_rate_limited", "Requests refused by the engine's own limits.", ["limit"], registry=REGISTRY
)


@functools.lru_cache(maxsize=4096)
def _series(endpoint: str, provider: str, model: str, status: int) -> tuple[Any, Any, dict[str, Any]]:
    """The labelled children a request touches; looked up once per label set (the lookup takes
    a lock and builds a tuple, most of observe()'s cost)."""
    tokens = {kind: TOKENS.labels(provider, model, kind.removesuffix("_tokens")) for kind in TOKEN_KINDS}
    return REQUESTS.labels(endpoint, provider, model, str(status)), LATENCY.labels(provider, model), tokens


def observe(rec: dict[str, Any]) -> None:
    """Count one finished request from its trace record."""
    endpoint = rec.get("endpoint", "chat")
    provider = rec.get("provider") or "none"
    model = rec.get("resolved_model") or "none"
    status = int(rec.get("status", 200))
    requests, latency, tokens = _series(endpoint, provider, model, status)
    requests.inc()
    latency.observe(rec.get("latency_ms", 0.0) / 1000)
    if status != 200:
        ERRORS.labels(endpoint, provider, rec.get("error_class") or "unknown").inc()
        if rec.get("error_class") in ("rate_limit_exceeded", "budget_exceeded"):
            LIMITED.labels(rec["error_class"]).inc()
    OVERHEAD.observe(rec.get("overhead_ms", 0.0) / 1000)
    if rec.get("ttft_ms") is not None:
        TTFT.labels(provider, model).observe(rec["ttft_ms"] / 1000)
    attempts = rec.get("attempts", ())
    if len(attempts) > 1 or (attempts and attempts[0][1] != 200):  # the common case is counted by REQUESTS
        for target, attempt_status, _error, _ms in attempts:
            a_provider, _, a_model = target.partition("/")
            ATTEMPTS.labels(a_provider.partition("@")[0], a_model, str(attempt_status)).inc()
    if rec.get("retries"):
        RETRIES.labels(endpoint).inc(rec["retries"])
    if rec.get("fallbacks"):
        FALLBACKS.labels(endpoint, rec.get("alias") or "").inc(rec["fallbacks"])
    if rec.get("cooldowns_started"):
        COOLDOWNS.inc(rec["cooldowns_started"])
    for kind, counter in tokens.items():
        if rec.get(kind):
            counter.inc(rec[kind])


def cost(provider: str, model: str, usd: float | None) -> None:
    """Called by the trace writer, which prices each trace."""
    if usd:
        COST.labels(provider or "none", model or "none").inc(usd)


def rejected(endpoint: str, exc: GatewayError) -> None:
    """A request refused before it had a project (bad key)."""
    REQUESTS.labels(endpoint, "none", "none", str(exc.status)).inc()
    ERRORS.labels(endpoint, "none", exc.error_class).inc()
