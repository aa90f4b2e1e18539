"""The text embedded for a trace: taken from its request messages (OpenAI chat format, content a
string or a list of parts) by a run's `prompt_fields`, whitespace collapsed, cut to MAX_CHARS.

- "system+last_user" (default): the system prompt(s) then the last user message. The system
  prompt tells apart applications that receive similar user text; the last user message is the
  request itself (earlier turns are context that would blur the intent).
- "last_user": the last user message only (one application, many intents).
- "all_user": every user message, in order (short multi-turn flows).

A trace whose chosen user text is empty has an empty prompt (whatever its system prompt says): runs
leave it out and say how many.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

PromptFields = Literal["last_user", "system+last_user", "all_user"]
PROMPT_FIELDS: tuple[str, ...] = ("last_user", "system+last_user", "all_user")
DEFAULT_PROMPT_FIELDS: PromptFields = "system+last_user"
# MiniLM reads 256 word pieces, about 1,000-1,500 characters of English: text past 2,000 characters
# is never read, so it is cut here (hashing and sending 10 MB prompts to the tokenizer buys nothing).
MAX_CHARS = 2000


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts (images skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text") or ""))
        return "\n".join(parts)
    return ""


def _messages(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, (str, bytes)):
        try:
            raw = orjson.loads(raw or b"[]")
        except orjson.JSONDecodeError:
            return [{"role": "user", "content": raw.decode() if isinstance(raw, bytes) else raw}]
    if isinstance(raw, dict):  # a single message, or a body with "messages"
        raw = raw.get("messages", [raw])
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def prompt_text(request_messages: Any, fields: str = DEFAULT_PROMPT_FIELDS) -> str:
    """The prompt as embedded before the cap: the chosen messages' text, whitespace collapsed."""
    messages = _messages(request_messages)
    users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if fields == "all_user":
        chosen = users
    else:
        chosen = users[-1:]
        if not " ".join(chosen).strip():
            return ""  # a system prompt alone says nothing about what this user wants
        if fields == "system+last_user":
            systems = [content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
            chosen = systems + chosen
    return " ".join(" ".join(chosen).split())


def capped(text: str) -> tuple[str, bool]:
    """The text cut to MAX_CHARS (at a word boundary when one is near), and whether it was cut."""
    if len(text) <= MAX_CHARS:
        return text, False
    head = text[:MAX_CHARS]
    space = head.rfind(" ", MAX_CHARS - 100)
    return (head[:space] if space > 0 else head), True


def prompts_for(rows: list[Any], fields: str = DEFAULT_PROMPT_FIELDS) -> tuple[list[str], list[bool]]:
    """The embedded text for each row's request messages, and whether each was cut to MAX_CHARS."""
    out, cut = [], []
    for raw in rows:
        text, was_cut = capped(prompt_text(raw, fields))
        out.append(text)
        cut.append(was_cut)
    return out, cut
