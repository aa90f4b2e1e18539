"""Cluster names from an LLM: the run's namer alias (default "namer") is called through the engine's
own /v1 path (gateway.internal.chat_sync: the alias, fallbacks, budgets and the trace all apply; the
trace is marked internal so clustering skips it) with the cluster's keywords and representative
prompts, and asked for JSON {"name", "description"}.

Naming never fails a run: an answer that is not that JSON is asked again (MAX_ATTEMPTS in all),
then the cluster keeps a name made of its keywords; a namer that cannot be reached at all (no such
alias, no provider credentials, upstream down) is not called again for the other clusters. Either
way `NamingOutcome.note` says what happened, for the run's message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.internal import InternalCallError, chat_sync, reply_text
from gateway.models import Alias, Project

log = logging.getLogger(__name__)

DEFAULT_NAMER = "namer"
MAX_ATTEMPTS = 3  # the first answer and two retries
MAX_NAME_WORDS = 6
PURPOSE = "cluster_naming"
_PROMPT_CHARS = 300  # per representative shown to the namer

SYSTEM = (
    "You name groups of requests that users sent to an AI application. All requests in a group share "
    "one intent. Answer with a JSON object only, no prose: "
    '{"name": "<the intent in at most 6 words>", "description": "<one line saying what these users want>"}'
)


@dataclass(frozen=True)
class ToName:
    key: Any
    keywords: list[str]
    representatives: list[str]


@dataclass
class NamingOutcome:
    names: dict[Any, tuple[str, str, str]] = field(default_factory=dict)  # key -> (name, description, source)
    note: str = ""  # why some or all names came from keywords ("" when the namer named every cluster)
    calls: int = 0


class Garbage(ValueError):
    """The namer's answer is not the JSON asked for."""


def keyword_name(keywords: Sequence[str], fallback: str = "Unnamed cluster") -> str:
    """Up to three keywords, the longer n-grams first skipped when they repeat a shorter one."""
    picked: list[str] = []
    for kw in keywords:
        if any(kw in p or p in kw for p in picked):
            continue
        picked.append(kw)
        if len(picked) == 3:
            break
    return ", ".join(picked) if picked else fallback


def parse_answer(text: str) -> tuple[str, str]:
    """(name, description) from the namer's answer: the first JSON object in it (code fences and
    prose around it tolerated); name cut to MAX_NAME_WORDS words, description to one line."""
    start = text.find("{")
    if start < 0:
        raise Garbage("no JSON object in the answer")
    end = text.rfind("}")
    candidates = [text[start : end + 1]] if end > start else []
    match = re.search(r"\{[^{}]*\}", text[start:])
    if match:
        candidates.append(match.group(0))
    data: Any = None
    for candidate in candidates:
        try:
            data = orjson.loads(candidate)
            break
        except orjson.JSONDecodeError:
            continue
    if not isinstance(data, dict):
        raise Garbage("the answer is not a JSON object")
    lowered = {str(k).lower(): v for k, v in data.items()}
    name = lowered.get("name")
    if not isinstance(name, str) or not name.split():
        raise Garbage('the JSON has no "name"')
    description = lowered.get("description")
    description = " ".join(description.split()) if isinstance(description, str) else ""
    words = name.strip().strip("\"'.").split()
    return " ".join(words[:MAX_NAME_WORDS])[:200], description[:500]


def _body(alias: str, item: ToName) -> dict[str, Any]:
    examples = "\n".join(f"{i}. {' '.join(r.split())[:_PROMPT_CHARS]}" for i, r in enumerate(item.representatives, 1))
    user = f"Keywords: {', '.join(item.keywords) or '(none)'}\nExample requests:\n{examples}"
    return {
        "model": alias,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": 120,
    }


def unreachable_reason(*, project: Project, alias: str) -> str:
    """Why the namer cannot be called at all, before trying ("" when it may be). A name with a slash
    is a provider/model the engine resolves itself; anything else must be one of the project's aliases."""
    if not alias:
        return "no namer alias was given"
    if "/" not in alias and not Alias.objects.filter(project=project, name=alias).exists():
        return f"the namer alias {alias!r} is not configured (Settings → Aliases)"
    return ""


def name_clusters(
    *, project: Project, alias: str, items: Sequence[ToName], should_stop: Callable[[], bool] | None = None
) -> NamingOutcome:
    """A (name, description, source) for every item: "llm" when the namer answered, else "keywords"."""
    out = NamingOutcome()
    reason = unreachable_reason(project=project, alias=alias)
    garbage = 0
    for item in items:
        if should_stop and should_stop():
            break
        if not reason:
            try:
                name, description = _ask(project, alias, item, out)
                out.names[item.key] = (name, description, "llm")
                continue
            except InternalCallError as exc:
                reason = f"the namer alias {alias!r} failed: {exc.message}"
                log.warning("naming: %s", reason)
            except Garbage as exc:
                garbage += 1
                log.info("naming: cluster %s: %s after %d attempts", item.key, exc, MAX_ATTEMPTS)
        out.names[item.key] = (keyword_name(item.keywords), "", "keywords")
    notes = []
    if reason:
        notes.append(f"Named from keywords (no namer reachable: {reason}).")
    if garbage:
        notes.append(
            f"The namer answered garbage for {garbage} cluster{'s' if garbage != 1 else ''} "
            f"({MAX_ATTEMPTS} tries each); {'those are' if garbage != 1 else 'it is'} named from keywords."
        )
    out.note = " ".join(notes)
    return out


def _ask(project: Project, alias: str, item: ToName, out: NamingOutcome) -> tuple[str, str]:
    error: Garbage | None = None
    for _attempt in range(MAX_ATTEMPTS):
        out.calls += 1
        answer = reply_text(chat_sync(project=project, body=_body(alias, item), purpose=PURPOSE))
        try:
            return parse_answer(answer)
        except Garbage as exc:
            error = exc
    assert error is not None
    raise error
