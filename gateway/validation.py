"""Checks on a chat completion request body, with OpenAI's wording and `param` where it helps."""

from __future__ import annotations

from typing import Any

from .errors import bad_request

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
NUMBER = (int, float)
# Parameter → accepted JSON types (None allows null).
TYPES: dict[str, tuple[type | None, ...]] = {
    "stream": (bool, None),
    "n": (int, None),
    "temperature": (*NUMBER, None),
    "top_p": (*NUMBER, None),
    "max_tokens": (int, None),
    "max_completion_tokens": (int, None),
    "seed": (int, None),
    "user": (str, None),
    "metadata": (dict, None),
    "tools": (list, None),
    "tool_choice": (str, dict, None),
    "response_format": (dict, None),
    "stream_options": (dict, None),
    "stop": (str, list, None),
    "frequency_penalty": (*NUMBER, None),
    "presence_penalty": (*NUMBER, None),
    "parallel_tool_calls": (bool, None),
}
TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}


def _is(value: Any, types: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):  # bool is an int in Python, not in JSON
        return bool in types
    return any(t is not None and isinstance(value, t) for t in types)


def validate_chat(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter (a string).", param="model")
    messages = body.get("messages")
    if messages is None:
        raise bad_request(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects.", param="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad_request(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = msg.get("role")
        if role not in ROLES:
            raise bad_request(
                f"Invalid value for messages[{i}].role: {role!r}. Expected one of {sorted(ROLES)}.",
                param=f"messages[{i}].role",
            )
        content = msg.get("content")
        if content is None and not (role == "assistant" and (msg.get("tool_calls") or msg.get("function_call"))):
            raise bad_request(f"Missing required parameter: 'messages[{i}].content'.", param=f"messages[{i}].content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(
                f"Invalid type for 'messages[{i}].content': expected a string or an array of content parts.",
                param=f"messages[{i}].content",
            )
    for name, types in TYPES.items():
        if name in body and not _is(body[name], types):
            expected = " or ".join(TYPE_NAMES[t] for t in types if t is not None)
            raise bad_request(f"Invalid type for '{name}': expected {expected}.", param=name)
    n = body.get("n")
    if n is not None and n < 1:
        raise bad_request("'n' must be at least 1.", param="n")
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and body[name] < 1:
            raise bad_request(f"'{name}' must be at least 1.", param=name)
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise bad_request("'temperature' must be between 0 and 2.", param="temperature")
    metadata = body.get("metadata")
    if metadata and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad_request("'metadata' must map strings to strings.", param="metadata")
    if isinstance(body.get("stop"), list) and not all(isinstance(s, str) for s in body["stop"]):
        raise bad_request("'stop' must be a string or an array of strings.", param="stop")
    fmt = body.get("response_format")
    if fmt is not None and fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise bad_request("'response_format.type' must be text, json_object or json_schema.", param="response_format")
    if fmt is not None and fmt.get("type") == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
        raise bad_request("'response_format.json_schema' must be an object.", param="response_format.json_schema")
    return body
