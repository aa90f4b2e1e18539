"""What a candidate can do, for a policy's constraints: tools, JSON schema output, images, and its
context window. Matched by model-name prefix; a model nobody lists is assumed to have none of the
optional capabilities and an 8k window, so a constraint never routes to something unproven."""

from __future__ import annotations

from dataclasses import dataclass

CAPABILITIES = ("tools", "json_schema", "vision")


@dataclass(frozen=True)
class Caps:
    features: frozenset[str]
    context_tokens: int


_ALL = frozenset(CAPABILITIES)
_TABLE: tuple[tuple[str, Caps], ...] = (
    ("openai/gpt-4o", Caps(_ALL, 128_000)),
    ("openai/gpt-4.1", Caps(_ALL, 1_000_000)),
    ("openai/gpt-5", Caps(_ALL, 400_000)),
    ("openai/o", Caps(_ALL, 200_000)),
    ("openai/gpt-3.5-turbo", Caps(frozenset({"tools"}), 16_385)),
    ("anthropic/claude", Caps(_ALL, 200_000)),
    ("gemini/gemini", Caps(_ALL, 1_000_000)),
    ("groq/llama-3.1", Caps(frozenset({"tools"}), 128_000)),
    ("mistral/", Caps(frozenset({"tools", "json_schema"}), 128_000)),
    ("local/", Caps(frozenset(), 8_192)),
)
UNKNOWN = Caps(frozenset(), 8_192)


def of(model: str) -> Caps:
    for prefix, caps in _TABLE:
        if model.startswith(prefix):
            return caps
    return UNKNOWN


def needs(body: dict[str, object]) -> frozenset[str]:
    """The capabilities a chat request asks for."""
    wanted = set()
    if body.get("tools") or body.get("functions"):
        wanted.add("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        wanted.add("json_schema")
    for message in body.get("messages") or ():  # type: ignore[attr-defined]
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            wanted.add("vision")
    return frozenset(wanted)
