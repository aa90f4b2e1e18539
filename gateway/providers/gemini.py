"""Google's Gemini API (`POST /v1beta/models/{model}:generateContent`, and
`:streamGenerateContent?alt=sse`), translated to and from OpenAI Chat Completions.

Pure translation lives in `to_gemini`, `from_gemini` and `StreamTranslator` so it can be tested
without a network; `GeminiProvider` only adds credentials and the HTTP calls. The key travels in the
`x-goog-api-key` header, never in the URL, so it cannot end up in an access log.

Thought signatures: Gemini's thinking models attach an opaque `thoughtSignature` to the function
calls they make and expect it back with that call in later turns (Gemini 3 refuses the turn without
it). OpenAI's format has no field for it, so it travels the way Google's own OpenAI-compatible
endpoint carries it: `extra_content.google.thought_signature` on the tool call. A history without
one (another model's, or a client that dropped the field) gets Google's documented placeholder.
"""

from __future__ import annotations

import mimetypes
import os
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from gateway.errors import GatewayError, bad_gateway, bad_request, unsupported_parameter

from .base import Credential, env_credential, redact
from .http import parse_event, post_json, post_sse

NAME = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# OpenAI parameters with no Gemini equivalent: refused (422) rather than silently dropped.
UNSUPPORTED = (
    "logprobs", "top_logprobs", "logit_bias", "functions", "function_call", "audio", "prediction", "web_search_options",
)  # fmt: skip
_FILTERED = (
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
)  # fmt: skip
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_FILTERED, "content_filter")}
# OpenAI sampling parameters → generationConfig fields.
SAMPLING = {
    "temperature": "temperature", "top_p": "topP", "seed": "seed",
    "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty",
}  # fmt: skip
TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
# OpenAI's reasoning_effort as a thinking budget in tokens (the values Google's OpenAI layer uses).
THINKING_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
# Google's documented stand-in for a function call whose signature is unknown.
SKIP_SIGNATURE = "skip_thought_signature_validator"
# Gemini answers a bad key with HTTP 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401.
_BAD_KEY = re.compile(r"API key (not valid|not found|expired)", re.IGNORECASE)


# ---------------------------------------------------------------- OpenAI → Gemini


def _text_of(content: Any, role: str) -> str:
    """Plain text of a system/developer/tool message: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise bad_request(f"Invalid content in a `{role}` message.", param="messages")


def _data_url(url: str) -> dict[str, Any]:
    header, sep, data = url[5:].partition(",")
    mime_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not mime_type:
        raise bad_request("Data URLs must be base64-encoded with a media type.", param="messages")
    return {"inlineData": {"mimeType": mime_type, "data": data}}


def _image_part(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request("An `image_url` part needs a `url`.", param="messages")
    if url.startswith("data:"):
        return _data_url(url)
    if url.startswith(("http://", "https://")):
        # Gemini fetches public URLs itself; the type is guessed from the path (JPEG when it says nothing).
        guessed, _ = mimetypes.guess_type(urlsplit(url).path)
        mime_type = guessed if guessed and guessed.startswith("image/") else "image/jpeg"
        return {"fileData": {"mimeType": mime_type, "fileUri": url}}
    raise bad_request("Image URLs must be http(s) or data: URLs.", param="messages")


def _parts(content: Any, role: str) -> list[dict[str, Any]]:
    """A user/assistant message's content as Gemini parts (empty text is dropped)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"Invalid content in a `{role}` message.", param="messages")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind) or ""
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image_part(part))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data")}})
        elif kind == "file" and str((part.get("file") or {}).get("file_data", "")).startswith("data:"):
            parts.append(_data_url(part["file"]["file_data"]))
        else:
            raise unsupported_parameter(NAME, "messages", f"Content part type `{kind}` cannot be translated.")
    return parts


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        args = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise bad_request(f"The arguments of tool call `{call.get('id')}` must be a JSON object.", param="messages")
    return args


def _function_calls(tool_calls: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """Assistant tool calls as functionCall parts; remembers each call's function name by id, since
    Gemini's functionResponse needs the name and OpenAI's tool message only carries the id."""
    parts = []
    for i, call in enumerate(tool_calls):
        name = (call.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("Every tool call needs a function name.", param="messages")
        names[str(call.get("id"))] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": _arguments(call)}}
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if isinstance(signature, str) and signature:
            part["thoughtSignature"] = signature
        elif i == 0:
            part["thoughtSignature"] = SKIP_SIGNATURE  # Gemini validates the first call of a turn
        parts.append(part)
    return parts


def _function_response(msg: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = msg.get("tool_call_id")
    name = names.get(str(call_id))
    if name is None:
        raise bad_request(
            f"The tool message for `{call_id}` does not answer a tool call of an earlier assistant message.",
            param="messages",
        )
    text = _text_of(msg.get("content"), "tool")
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    # Gemini wants an object; anything else is the function's `output` (its documented key).
    response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System parts, and the turns as Gemini contents (consecutive turns of one role merged, so the
    answers to parallel calls arrive together in the turn after the calls)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, role)
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            parts = _parts(content, role)
        elif role == "assistant":
            role = "model"
            parts = _parts(content, "assistant") + _function_calls(msg.get("tool_calls") or [], names)
        elif role == "tool":
            role = "user"
            parts = [_function_response(msg, names)]
        else:
            raise bad_request(f"Unsupported message role `{role}`.", param="messages")
        if not parts:
            continue  # Gemini rejects a content without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise unsupported_parameter(NAME, "tools", f"Tool type `{tool.get('type')}` cannot be translated.")
        fn = tool.get("function") or {}
        spec: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            spec["description"] = fn["description"]
        if fn.get("parameters"):
            # JSON Schema as is (`parameters` would want Google's OpenAPI subset).
            spec["parametersJsonSchema"] = fn["parameters"]
        declarations.append(spec)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in TOOL_MODES:
        config: dict[str, Any] = {"mode": TOOL_MODES[choice]}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        config = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    else:
        raise bad_request("Invalid `tool_choice`.", param="tool_choice")
    return {"functionCallingConfig": config}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in SAMPLING.items():
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = body.get("n")
    if n is not None and n != 1:
        config["candidateCount"] = n
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        if kind == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
            if schema:
                config["responseJsonSchema"] = schema
    elif kind not in (None, "text"):
        raise unsupported_parameter(NAME, "response_format", f"Type `{kind}` cannot be translated.")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in THINKING_BUDGETS:
            raise bad_request(f"Invalid `reasoning_effort`: {effort!r}.", param="reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    return config


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request body as a Gemini generateContent body (the model goes in the URL).
    `metadata`, `user` and `stream_options` have no counterpart and are not sent; Gemini always
    reports usage."""
    system, contents = _contents(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            out["toolConfig"] = _tool_config(body["tool_choice"])
    return out


# ---------------------------------------------------------------- Gemini → OpenAI


def usage_of(meta: dict[str, Any]) -> dict[str, Any]:
    """Gemini usageMetadata as OpenAI usage. promptTokenCount already includes the cached tokens;
    thinking tokens are billed as output, so they count as completion tokens."""
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(meta.get("cachedContentTokenCount") or 0)},
    }
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def finish_reason(reason: str | None, called_tools: bool) -> str | None:
    if not reason:
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    # Gemini says STOP after function calls; OpenAI clients look for tool_calls.
    return "tool_calls" if mapped == "stop" and called_tools else mapped


def _call_id(call: dict[str, Any]) -> str:
    return str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}")


def _tool_call(part: dict[str, Any]) -> dict[str, Any]:
    call = part["functionCall"]
    function = {"name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {}).decode()}
    out: dict[str, Any] = {"id": _call_id(call), "type": "function", "function": function}
    if part.get("thoughtSignature"):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _blocked(resp: dict[str, Any]) -> bool:
    return bool((resp.get("promptFeedback") or {}).get("blockReason"))


def from_gemini(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A Gemini generateContent response as an OpenAI `chat.completion` object."""
    candidates = resp.get("candidates") or []
    if not candidates and not _blocked(resp):
        raise bad_gateway("Provider `gemini` returned a response without candidates.")
    choices = []
    for i, cand in enumerate(candidates):
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for part in (cand.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue  # thought summaries are not part of the OpenAI answer
            if "functionCall" in part:
                tool_calls.append(_tool_call(part))
            elif part.get("text"):
                texts.append(part["text"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        finish = finish_reason(cand.get("finishReason"), bool(tool_calls)) or "stop"
        choices.append({"index": cand.get("index", i), "message": message, "finish_reason": finish, "logprobs": None})
    if not choices:  # the prompt itself was blocked
        message = {"role": "assistant", "content": None, "refusal": None}
        choices.append({"index": 0, "message": message, "finish_reason": "content_filter", "logprobs": None})
    choices.sort(key=lambda c: c["index"])
    return {
        "id": f"chatcmpl-{resp.get('responseId', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("modelVersion") or model,
        "choices": choices,
        "usage": usage_of(resp.get("usageMetadata") or {}),
    }


class StreamTranslator:
    """Turns Gemini stream events (each a partial GenerateContentResponse) into OpenAI
    `chat.completion.chunk` dicts. Gemini has no closing event: the stream is complete once every
    candidate has a finishReason, and `finish()` (called when the upstream ends) then gives the last
    chunk with usage, or raises if the stream was cut short."""

    def __init__(self, model: str, n: int = 1, secrets: tuple[str, ...] = ()) -> None:
        self.id = "chatcmpl-"
        self.model = model
        self.created = int(time.time())
        self.n = n
        self.secrets = secrets
        self.usage: dict[str, Any] = {}
        self.finished: dict[int, str] = {}
        self._started: set[int] = set()
        self._tools: dict[int, int] = {}  # candidate index → tool calls so far

    @property
    def done(self) -> bool:
        return len(self.finished) >= self.n

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if "error" in data:
            err = data.get("error")
            err = err if isinstance(err, dict) else {}
            message = redact(str(err.get("message") or "stream error"), self.secrets)
            raise bad_gateway(f"Provider `gemini` failed mid-stream: {message}", code="upstream_stream_broken")
        if data.get("responseId") and self.id == "chatcmpl-":
            self.id = f"chatcmpl-{data['responseId']}"
        self.model = data.get("modelVersion") or self.model
        if data.get("usageMetadata"):
            self.usage = data["usageMetadata"]  # cumulative: the latest replaces the earlier counts
        chunks: list[dict[str, Any]] = []
        candidates = data.get("candidates") or []
        if not candidates and _blocked(data):
            for index in range(self.n):
                chunks.extend(self._start(index))
                self.finished[index] = "content_filter"
                chunks.append(self._chunk(index, {}, "content_filter"))
            return chunks
        for i, cand in enumerate(candidates):
            index = int(cand.get("index", i))
            if index in self.finished:
                continue  # nothing follows a candidate's finishReason
            chunks.extend(self._start(index))
            for part in (cand.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue
                if "functionCall" in part:
                    chunks.extend(self._tool_deltas(index, part))
                elif part.get("text"):
                    chunks.append(self._chunk(index, {"content": part["text"]}))
            finish = finish_reason(cand.get("finishReason"), index in self._tools)
            if finish:
                self.finished[index] = finish
                chunks.append(self._chunk(index, {}, finish))
        return chunks

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self._started:
            return []
        self._started.add(index)
        return [self._chunk(index, {"role": "assistant", "content": ""})]

    def _tool_deltas(self, index: int, part: dict[str, Any]) -> list[dict[str, Any]]:
        """A functionCall arrives whole; OpenAI clients expect the name first, then the arguments."""
        call = _tool_call(part)
        position = self._tools.get(index, 0)
        self._tools[index] = position + 1
        head: dict[str, Any] = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        if "extra_content" in call:
            head["extra_content"] = call["extra_content"]
        args = {"index": position, "function": {"arguments": call["function"]["arguments"]}}
        return [self._chunk(index, {"tool_calls": [head]}), self._chunk(index, {"tool_calls": [args]})]

    def finish(self) -> dict[str, Any]:
        if not self.done:
            raise bad_gateway("Provider `gemini` ended the stream early.", code="upstream_stream_broken")
        last = self._chunk(0, {})
        last["choices"] = []
        last["usage"] = usage_of(self.usage)
        return last


# ---------------------------------------------------------------- the provider


def _auth_error(exc: GatewayError) -> GatewayError:
    """Gemini reports a bad key as HTTP 400; callers should see it as the credential problem it is."""
    if exc.upstream_status == 400 and _BAD_KEY.search(exc.message):
        mapped = bad_gateway(
            "Provider `gemini` rejected the credentials configured in the engine (HTTP 400, API key not valid).",
            code="upstream_auth_error",
        )
        mapped.upstream_status = exc.upstream_status
        return mapped
    return exc


class GeminiProvider:
    name: str = NAME
    model_prefixes: tuple[str, ...] = ("gemini-",)
    env_hint = "GEMINI_API_KEY"
    known_models: tuple[str, ...] = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite")

    def credential(self, stored: Credential | None) -> Credential | None:
        if stored is None and not os.environ.get("GEMINI_API_KEY"):
            # The google-genai SDK's other name for the key.
            return env_credential(None, "GOOGLE_API_KEY", "GEMINI_BASE_URL", DEFAULT_BASE_URL)
        return env_credential(stored, "GEMINI_API_KEY", "GEMINI_BASE_URL", DEFAULT_BASE_URL)

    def check(self, body: dict[str, Any]) -> None:
        for param in UNSUPPORTED:
            value = body.get(param)
            if value is not None and value is not False and value != {}:
                raise unsupported_parameter(self.name, param)
        modalities = body.get("modalities")
        if modalities and set(modalities) != {"text"}:
            raise unsupported_parameter(self.name, "modalities", "Only text output is translated.")
        if body.get("tools") and body.get("parallel_tool_calls") is False:
            raise unsupported_parameter(
                self.name, "parallel_tool_calls", "Gemini cannot be kept from calling several tools at once."
            )

    def _request(
        self, body: dict[str, Any], model: str, cred: Credential, method: str
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        self.check(body)
        base = cred.base_url.rstrip("/").removesuffix("/v1beta").removesuffix("/v1")
        headers = {"content-type": "application/json"}
        if cred.api_key:
            headers["x-goog-api-key"] = cred.api_key
        return f"{base}/v1beta/models/{model}:{method}", to_gemini(body), headers

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        url, upstream, headers = self._request(body, model, cred, "generateContent")
        try:
            data = await post_json(self.name, url, upstream, headers, cred.secrets())
        except GatewayError as exc:
            raise _auth_error(exc) from None
        return from_gemini(data, model)

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        url, upstream, headers = self._request(body, model, cred, "streamGenerateContent")
        translator = StreamTranslator(model, int(body.get("n") or 1), cred.secrets())
        # post_sse is an async generator: close it (and its HTTP response) even if our caller stops early.
        events = cast(
            AsyncGenerator[tuple[str, bytes], None],
            post_sse(self.name, f"{url}?alt=sse", upstream, headers, cred.secrets()),
        )
        try:
            async with aclosing(events):
                async for _event, data in events:
                    for chunk in translator.feed(parse_event(self.name, data)):
                        yield chunk
        except GatewayError as exc:
            raise _auth_error(exc) from None
        yield translator.finish()
