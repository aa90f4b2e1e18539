"""The router on the gateway's request path: from a chat body and a policy name to a Decision
(routing/router.py), and the Decision onto the response headers and the trace.

Routed on the last user message's text (what the user asked now; earlier turns and the system prompt
mostly repeat across a conversation); the whole request's size is estimated for cost and context
checks. Candidates whose provider this project cannot call are not eligible, by the same rule
gateway/failover.py applies (a stored credential, else the provider's environment credential).
"""

from __future__ import annotations

import math
from time import perf_counter
from typing import Any

from distillation.serving import looks_like_student
from gateway import cache as gateway_cache
from gateway.errors import GatewayError, bad_request
from gateway.io import Headers
from gateway.providers import PROVIDERS
from gateway.resolve import parse_target

from . import cache, capabilities, embedder
from .router import BUILTIN_NAME, Decision, NoCandidate, decide

CHARS_PER_TOKEN = 4  # the usual estimate for English text; the embedder's count stops at its window
TOKENS_PER_MESSAGE = 4  # role and separators, as OpenAI's token counting guide counts them


class NoRoute(GatewayError):
    """A routing failure that still belongs to a policy (the trace records which)."""

    def __init__(self, policy: str, status: int, message: str, code: str, **kw: Any) -> None:
        super().__init__(status, message, code=code, **kw)
        self.policy = policy


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return []


def routed_text(messages: Any) -> str:
    """The last user message's text (string content or its text parts)."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(t for t in _texts(message.get("content")) if t)
    return ""


def estimate_tokens(body: dict[str, Any]) -> int:
    """The whole request's prompt tokens, roughly: characters / 4 over every message's text and
    tool-call arguments, plus a few per message."""
    chars, count = 0, 0
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        count += 1
        chars += sum(len(t) for t in _texts(message.get("content")))
        for call in message.get("tool_calls") or ():
            chars += len(str(((call or {}).get("function") or {}).get("arguments") or ""))
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count


def _student(provider: str, model: str) -> bool:
    local = PROVIDERS["local"]
    return provider == local.name and model not in local.known_models and looks_like_student(model)


async def reachable(project_id: int, models: tuple[str, ...]) -> set[str]:
    """The candidates this project can call: a stored credential for the provider (with the label a
    `provider@label/model` pins), else the provider's environment credential. A distilled student
    answers only its own project (gateway/resolve.py)."""
    stored = await gateway_cache.credentials(project_id)
    found = set()
    for model in models:
        target = parse_target(model)
        if target is None:
            continue
        if _student(target.provider, target.model) and target.model not in await gateway_cache.students(project_id):
            continue
        creds = stored.get(target.provider) or []
        if target.label:
            ok = any(c.label == target.label for c in creds)
        else:
            ok = bool(creds) or PROVIDERS[target.provider].credential(None) is not None
        if ok:
            found.add(model)
    return found


def policy_label(policy: str | None) -> str:
    return BUILTIN_NAME if policy is None else policy


async def decide_request(project_id: int, body: dict[str, Any], policy: str | None) -> Decision:
    """The routing decision for a chat body under the named policy (None: the project's default
    policy, else the built-in one). Raises GatewayError: 400 without a prompt, 404 for an unknown
    policy, 503 (NoRoute) when no candidate can take the request."""
    t0 = perf_counter()
    text = routed_text(body.get("messages"))
    if not text.strip():
        raise bad_request("Routing needs a prompt: the last user message has no text to route on.", param="messages")
    try:
        compiled = await cache.compiled(project_id, policy)
    except LookupError:
        raise NoRoute(
            policy_label(policy),
            404,
            f"The routing policy `{policy}` does not exist in this project.",
            "policy_not_found",
            param="model",
        ) from None
    emb = await embedder.aembed(text)
    try:
        decision = decide(
            compiled,
            emb,
            prompt_tokens=estimate_tokens(body),
            needs=capabilities.needs(body),
            reachable=await reachable(project_id, compiled.models),
        )
    except NoCandidate as exc:
        raise NoRoute(exc.policy, 503, str(exc), "no_route", type="server_error") from None
    decision.decision_ms = (perf_counter() - t0) * 1000
    return decision


def headers(decision: Decision) -> Headers:
    """x-opentracy-route-*: the policy, the model it chose, the cluster, the decision time and every
    candidate's predicted error. x-opentracy-model stays the model that answered (a fallback may)."""
    predicted = ",".join(f"{m}={v:.4f}" for m, v in decision.predicted.items())
    return [
        (b"x-opentracy-route-policy", decision.policy.encode()),
        (b"x-opentracy-route-model", decision.chosen.encode()),
        (b"x-opentracy-route-cluster", decision.cluster.encode()),
        (b"x-opentracy-route-ms", f"{decision.decision_ms:.3f}".encode()),
        (b"x-opentracy-route-predicted", predicted.encode()),
    ]


def trace_fields(decision: Decision) -> dict[str, Any]:
    """The trace columns of ch_migrations/m0006_routing.py."""
    return {
        "route_policy": decision.policy,
        "route_cluster": decision.cluster,
        "route_predicted": {m: round(v, 4) for m, v in decision.predicted.items()},
        "route_decision_ms": decision.decision_ms,
        "route_note": "; ".join(decision.notes),
    }
