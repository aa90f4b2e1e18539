"""Model addressing: `provider/model`, `provider@label/model` (one stored credential), a bare model
name mapped to its provider, or an alias with its fallback chain, retry budget and canary share. `auto`,
`router/<policy>` and an alias whose target is `router/<policy>` name a routing policy instead: the
router (routing/gateway.py) picks the targets per prompt, and `routed_plan` turns its order into a plan."""

from __future__ import annotations

import random
from dataclasses import dataclass

from distillation.serving import looks_like_student

from . import cache
from .errors import bad_request, model_not_found
from .providers import PROVIDERS
from .providers.base import Target

MAX_RETRIES = 10
AUTO = "auto"  # the project's default routing policy, else the built-in one
ROUTER_PREFIX = "router/"


@dataclass(frozen=True)
class Plan:
    """What to try, in order, for one request: each target gets `retries` more tries on transient
    failures before the next one is tried."""

    targets: tuple[Target, ...]
    retries: int
    alias: str = ""


def parse_target(name: str) -> Target | None:
    """`openai/gpt-4o` → Target(openai, gpt-4o); `gpt-4o` → the provider owning that prefix."""
    provider, sep, model = name.partition("/")
    provider, _, label = provider.partition("@")
    if sep:
        return Target(provider, model, label) if provider in PROVIDERS and model else None
    for p in PROVIDERS.values():
        if name.startswith(p.model_prefixes):
            return Target(p.name, name)
    return None


def _target(name: str, shown: str) -> Target:
    target = parse_target(name)
    if target is None:
        raise model_not_found(shown)
    return target


def check_retries(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise bad_request(f"{where} must be an integer from 0 to {MAX_RETRIES}.", param="opentracy.retries")
    return value


async def _check_student(project_id: int, target: Target, shown: str) -> None:
    """A distilled student (`local/<name>-v<n>`, or `vllm/<name>-v<n>`) answers only its own
    project: another project's student is as unknown as a model that does not exist."""
    local_student = (
        target.provider == "local"
        and target.model not in PROVIDERS["local"].known_models  # all-minilm-l6-v2 has a student's shape
        and looks_like_student(target.model)
    )
    if local_student and target.model not in await cache.students(project_id):
        raise model_not_found(shown)
    # A vLLM server may be shared (VLLM_BASE_URL): another project's adapter on it is not this one's.
    if (
        target.provider == "vllm"
        and looks_like_student(target.model)
        and target.model in await cache.all_students()
        and target.model not in await cache.students(project_id)
    ):
        raise model_not_found(shown)


async def resolve(project_id: int, requested: str, retries: int | None, default_retries: int) -> Plan:
    """The plan for a requested model name. `retries` is the request's own override, if any."""
    route = (await cache.aliases(project_id)).get(requested)
    if route is None:
        target = _target(requested, requested)
        await _check_student(project_id, target, requested)
        return Plan((target,), default_retries if retries is None else retries)
    names = [route.target, *route.fallbacks]
    if route.canary_target and random.random() * 100 < route.canary_percent:  # a traffic split, not a secret
        names.insert(0, route.canary_target)  # the incumbent target stays next: a failing canary falls back to it
    targets = tuple(_target(name, requested) for name in dict.fromkeys(names))
    for target in targets:
        await _check_student(project_id, target, requested)
    budget = retries if retries is not None else route.retries if route.retries is not None else default_retries
    return Plan(targets, budget, requested)


@dataclass(frozen=True)
class PolicyRef:
    """A request that names a routing policy: directly, or through an alias (whose fallbacks come
    after the policy's candidates and whose retry budget applies)."""

    policy: str | None  # None: the project's default policy
    alias: str = ""
    fallbacks: tuple[str, ...] = ()
    retries: int | None = None


async def policy_ref(project_id: int, requested: str) -> PolicyRef | None:
    """The policy a requested model name routes through, or None for a plain model or alias. An
    alias named `auto` keeps its meaning (aliases existed first)."""
    route = (await cache.aliases(project_id)).get(requested)
    if route is not None:
        if route.target.startswith(ROUTER_PREFIX):
            return PolicyRef(route.target.removeprefix(ROUTER_PREFIX), requested, route.fallbacks, route.retries)
        return None
    if requested == AUTO:
        return PolicyRef(None)
    if requested.startswith(ROUTER_PREFIX):
        return PolicyRef(requested.removeprefix(ROUTER_PREFIX))
    return None


def routed_plan(order: list[str], ref: PolicyRef, retries: int | None, default_retries: int) -> Plan:
    """The plan for a routing decision: its candidates best first (failover falls back down the
    list), then the alias's own fallbacks."""
    names = list(dict.fromkeys([*order, *ref.fallbacks]))
    targets = tuple(_target(name, name) for name in names)
    budget = retries if retries is not None else ref.retries if ref.retries is not None else default_retries
    return Plan(targets, budget, ref.alias)
