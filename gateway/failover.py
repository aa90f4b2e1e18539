"""Retries, fallbacks, cooldowns and load balancing around one upstream call.

A plan (gateway/resolve.py) lists targets; each gets 1 + `retries` tries on transient failures
(connect errors, timeouts, 429, 5xx, a stream broken before content), with exponential backoff and
full jitter, or the upstream's Retry-After when it sends one. The next target is tried on those
failures and on context-length errors, credential rejections, and a target that cannot be used
(not configured, cooling down, or unable to honour the request's parameters). Other errors (400,
404, 422 on the first target) go straight back to the caller: another try would fail the same way.

A target's credentials are chosen at random by weight among those not cooling down. A credential
that fails transiently COOLDOWN_FAILURES times in a row is skipped for COOLDOWN_S; the first call
after that is the probe, and one more failure starts a new cooldown. State is per process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar

from django.conf import settings

from .errors import GatewayError, bad_request
from .providers import PROVIDERS
from .providers.base import Credential, Provider, Target
from .resolve import Plan

T = TypeVar("T")
Call = Callable[[Provider, Target, Credential], Awaitable[T]]


# ---------------------------------------------------------------- cooldowns


@dataclass
class Breaker:
    failures: int = 0
    until: float = 0.0  # monotonic time the cooldown ends
    trips: int = 0
    last_error: str = ""


BreakerKey = tuple[int, str, str, str]  # project, provider, credential label, model
_breakers: dict[BreakerKey, Breaker] = {}


def _cooling(key: BreakerKey, now: float) -> float:
    """Seconds of cooldown left (0 when usable)."""
    b = _breakers.get(key)
    return max(0.0, b.until - now) if b else 0.0


def _failed(key: BreakerKey, error: str) -> bool:
    """Count a transient failure; True when it starts a cooldown."""
    b = _breakers.setdefault(key, Breaker())
    b.failures += 1
    b.last_error = error
    if b.failures >= settings.OPENTRACY_COOLDOWN_FAILURES:
        b.until = time.monotonic() + settings.OPENTRACY_COOLDOWN_S
        b.trips += 1
        return True
    return False


def _succeeded(key: BreakerKey) -> None:
    b = _breakers.get(key)
    if b is not None and b.failures:
        b.failures, b.until = 0, 0.0


def cooldowns(project_id: int) -> list[dict[str, Any]]:
    """The project's targets with failures or a cooldown, for the dashboard."""
    now = time.monotonic()
    rows = []
    for (pid, provider, label, model), b in sorted(_breakers.items()):
        if pid != project_id or not (b.failures or b.trips):
            continue
        target = Target(provider, model, label).name
        left = max(0.0, b.until - now)
        rows.append(
            {
                "target": target,
                "failures": b.failures,
                "cooling_s": round(left, 1),
                "trips": b.trips,
                "last_error": b.last_error,
            }
        )
    return rows


def cooling_count() -> int:
    now = time.monotonic()
    return sum(1 for b in _breakers.values() if b.until > now)


def reset() -> None:
    _breakers.clear()


# ---------------------------------------------------------------- the loop


@dataclass
class Attempt:
    target: str
    status: int
    error_class: str
    latency_ms: float

    def row(self) -> tuple[str, int, str, float]:
        return (self.target, self.status, self.error_class, self.latency_ms)


@dataclass
class Outcome:
    """What the loop did; the caller copies it onto the trace."""

    attempts: list[Attempt] = field(default_factory=list)
    retries: int = 0
    fallbacks: int = 0
    cooldowns_started: int = 0
    target: Target | None = None  # the target that answered (or was tried last)
    upstream_s: float = 0.0


def backoff(attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry number `attempt + 1`; None when the upstream asks for longer
    than we are willing to hold the caller (go to the next target instead)."""
    cap = settings.OPENTRACY_RETRY_MAX_WAIT_S
    if retry_after is not None:
        return retry_after if retry_after <= cap else None
    return random.uniform(0, min(cap, settings.OPENTRACY_RETRY_BACKOFF_S * 2**attempt))


def transient(exc: GatewayError) -> bool:
    return exc.retryable or exc.code == "upstream_stream_broken"


def moves_on(exc: GatewayError) -> bool:
    """Whether the next target may succeed where this one failed."""
    return transient(exc) or exc.context_length or exc.code in ("upstream_auth_error", "upstream_cooling_down")


def pick(stored: list[Credential], project_id: int, target: Target, now: float) -> tuple[Credential | None, float]:
    """A credential by weight among the usable ones; else None and the shortest cooldown left."""
    pool = [c for c in stored if not target.label or c.label == target.label]
    usable = [c for c in pool if _cooling((project_id, target.provider, c.label, target.model), now) == 0]
    if not usable:
        waits = [_cooling((project_id, target.provider, c.label, target.model), now) for c in pool]
        return None, min(waits, default=0.0)
    if len(usable) == 1:
        return usable[0], 0.0
    return random.choices(usable, weights=[max(c.weight, 0) or 1 for c in usable])[0], 0.0


class Failover:
    def __init__(self, project_id: int, plan: Plan, stored: dict[str, list[Credential]]) -> None:
        self.project_id, self.plan, self.stored = project_id, plan, stored
        self.outcome = Outcome()

    def _credential(self, provider: Provider, target: Target) -> Credential:
        stored = self.stored.get(provider.name) or []
        if target.label and not any(c.label == target.label for c in stored):
            raise bad_request(
                f"Provider `{provider.name}` has no credential labelled `{target.label}` in this project.",
                code="provider_not_configured",
            )
        if stored:
            cred, wait = pick(stored, self.project_id, target, time.monotonic())
            if cred is None:
                raise cooling_down(target, wait)
            return provider.credential(cred) or cred
        env = provider.credential(None)
        if env is None:
            raise bad_request(
                f"Provider `{provider.name}` is not configured: set {provider.env_hint} or store a credential "
                "for this project.",
                code="provider_not_configured",
            )
        if _cooling((self.project_id, target.provider, "", target.model), time.monotonic()):
            raise cooling_down(target, _cooling((self.project_id, target.provider, "", target.model), time.monotonic()))
        return env

    async def run(self, call: Call[T]) -> T:
        out = self.outcome
        last: GatewayError | None = None
        for step, target in enumerate(self.plan.targets):
            provider = PROVIDERS[target.provider]
            if step:
                out.fallbacks += 1
            for attempt in range(self.plan.retries + 1):
                if attempt:
                    out.retries += 1
                out.target = target
                t = perf_counter()
                cred: Credential | None = None
                try:
                    cred = self._credential(provider, target)
                    result = await call(provider, target, cred)
                except GatewayError as exc:
                    elapsed = perf_counter() - t
                    out.upstream_s += elapsed
                    status = exc.upstream_status or exc.status
                    out.attempts.append(Attempt(target.name, status, exc.error_class, elapsed * 1000))
                    if last is None or not skipped(exc):
                        last = exc  # a skipped fallback does not hide the real failure
                    if cred is not None and transient(exc):
                        key = (self.project_id, target.provider, cred.label, target.model)
                        out.cooldowns_started += _failed(key, exc.error_class)
                    if not self._next_target(exc, step):
                        raise
                    if transient(exc) and attempt < self.plan.retries:
                        wait = backoff(attempt, exc.retry_after)
                        if wait is not None:
                            await asyncio.sleep(wait)
                            out.upstream_s += wait  # waiting is not the engine's overhead
                            continue
                    break
                elapsed = perf_counter() - t
                out.upstream_s += elapsed
                out.attempts.append(Attempt(target.name, 200, "", elapsed * 1000))
                _succeeded((self.project_id, target.provider, cred.label, target.model))
                return result
        assert last is not None
        raise last

    def _next_target(self, exc: GatewayError, step: int) -> bool:
        """Whether to keep going (retry or fall back) after `exc`."""
        if moves_on(exc):
            return True
        # A fallback that is not configured or cannot honour the request is skipped; on the
        # first target these are the caller's to fix.
        return step > 0 and skipped(exc)


def skipped(exc: GatewayError) -> bool:
    return exc.code in ("provider_not_configured", "unsupported_parameter")


def cooling_down(target: Target, wait: float) -> GatewayError:
    return GatewayError(
        503,
        f"`{target.name}` is cooling down after repeated failures; retry in {wait:.0f} s.",
        type="server_error",
        code="upstream_cooling_down",
        retry_after=max(wait, 1.0),
    )
