"""A fake AWS Bedrock runtime (Converse and ConverseStream) for tests, speaking the real wire format:
SigV4-signed JSON requests, JSON answers, `{"message": ...}` errors with `x-amzn-ErrorType`, and
binary AWS event streams (`application/vnd.amazon.eventstream`) for ConverseStream.

    fake = FakeBedrock()
    fake.start()            # serves on 127.0.0.1:<free port> from a background thread
    ... Credential(SECRET_KEY, fake.base_url, {"access_key_id": ACCESS_KEY_ID, "region": "us-east-1"}) ...
    fake.stop()

Every request's SigV4 signature is recomputed with botocore from the method, URL, signed headers
and body received, with the known test secret: a mismatch is a 403 InvalidSignatureException, an
unknown access key id a 403 UnrecognizedClientException, a service other than "bedrock" a 403 too.

The model id in the URL picks the behaviour:
- default: a text answer "You said: <last user text>"; usage is deterministic: inputTokens = words in
  the system prompt and in every text / toolResult text of the messages, outputTokens = words in
  the answer. A model containing "cached" also reports cacheReadInputTokens=7 and
  cacheWriteInputTokens=3.
- "tool": a toolUse block for the first tool in the request, stopReason "tool_use", input
  {"city": "Paris"}; streamed as several input pieces.
- "throttle": 429 ThrottlingException (before the stream starts); "throttle-stream" (streaming):
  a throttlingException message after the first text delta.
- "stream-error" (streaming): a modelStreamErrorException message after the first text delta.
- "error-400" / "error-500": that status with Bedrock's error body; "too-long": a 400
  ValidationException saying the input is too long.
- "echo-auth": 400 whose message echoes the Authorization header and session token received (to
  test redaction).
- "slow": sleeps 30 s before answering.
- "garbage": 200 with a body that is not JSON (not an event stream, when streaming).
- "corrupt" (streaming): messageStart, then a frame whose message CRC is wrong.
- "cut" (streaming): two text deltas, then the connection is closed without messageStop.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime
import hmac
import json
import re
import struct
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .server import LoopbackServer

ACCESS_KEY_ID = "AKIAFAKEBEDROCK0001"
SECRET_KEY = "fake/Secret+Access+Key/0123456789abcdefSECRET"
REQUEST_ID = "5e1c0ffe-0000-4000-8000-bedrock00001"
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]+)$")


def _error(status: int, kind: str, message: str) -> web.Response:
    headers = {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    headers["x-amzn-RequestId"] = REQUEST_ID
    return web.json_response({"message": message}, status=status, headers=headers)


def _words(text: str) -> int:
    return len(text.split())


def _block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for block in blocks or []:
        if "text" in block:
            texts.append(block["text"])
        elif "toolResult" in block:
            for part in block["toolResult"].get("content") or []:
                if "text" in part:
                    texts.append(part["text"])
                elif "json" in part:
                    texts.append(json.dumps(part["json"]))
    return texts


def input_tokens(body: dict[str, Any]) -> int:
    count = sum(_words(t) for t in _block_texts(body.get("system") or []))
    for msg in body.get("messages", []):
        count += sum(_words(t) for t in _block_texts(msg.get("content")))
    return count


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages", [])):
        if msg.get("role") == "user":
            texts = [t for t in _block_texts(msg.get("content")) if t]
            if texts:
                return texts[-1]
    return ""


# ---------------------------------------------------------------- event-stream encoding


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # name length (1 byte), name, type 7 (string), value length (2 bytes), value
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, prelude CRC32), headers,
    payload, message CRC32 (over everything before it)."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def event(kind: str, data: dict[str, Any]) -> bytes:
    # Bedrock pads events with a "p" field so their sizes do not reveal the content.
    payload = json.dumps({**data, "p": "abcdef"}).encode()
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, payload)


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, json.dumps({"message": message}).encode())


# ---------------------------------------------------------------- the server


class FakeBedrock(LoopbackServer):
    name = "fake-bedrock"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{model_id:.+}/converse", self._converse)
        app.router.add_post("/model/{model_id:.+}/converse-stream", self._converse_stream)

    # ------------------------------------------------------------ SigV4 verification

    def _verify(self, request: web.Request, raw: bytes) -> web.Response | None:
        """Recompute the signature with botocore from what was received; None when it matches."""
        found = _AUTH.match(request.headers.get("Authorization", ""))
        amz_date = request.headers.get("X-Amz-Date", "")
        if not found or not amz_date:
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        credential, signed_headers, signature = found.groups()
        scope = credential.split("/")
        if len(scope) != 5:
            return _error(403, "IncompleteSignatureException", "Credential must have five parts.")
        key_id, date, region, service, terminal = scope
        if key_id != ACCESS_KEY_ID:
            return _error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        except ValueError:
            return _error(403, "InvalidSignatureException", "X-Amz-Date is not an ISO 8601 basic timestamp.")
        skew = abs((datetime.datetime.now(datetime.UTC) - when).total_seconds())
        if service != "bedrock" or terminal != "aws4_request" or date != amz_date[:8] or skew > 300:
            return _error(403, "InvalidSignatureException", "Credential should be scoped correctly.")
        names = signed_headers.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return _error(403, "InvalidSignatureException", "Host and X-Amz-Date must be signed.")
        headers = {name: request.headers.get(name, "") for name in names}
        url = f"http://{request.host}{request.raw_path}"
        signed = AWSRequest(method=request.method, url=url, data=raw, headers=headers)
        signed.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_KEY), "bedrock", region)
        canonical = signer.canonical_request(signed)
        expected = signer.signature(signer.string_to_sign(signed, canonical), signed)
        if not hmac.compare_digest(expected, signature):
            return _error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
            )
        return None

    async def _accept(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        raw = await request.read()
        model = unquote(request.match_info["model_id"])
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        self.requests.append(
            {"headers": dict(request.headers), "body": body, "model": model, "path": request.raw_path, "raw": raw}
        )
        refused = self._verify(request, raw)
        if refused is not None:
            return refused
        if not isinstance(body, dict) or not body.get("messages"):
            return _error(400, "ValidationException", "messages is required and must be a non-empty list.")
        if "echo-auth" in model:
            token = request.headers.get("X-Amz-Security-Token", "")
            return _error(400, "ValidationException", f"Bad request {request.headers['Authorization']} {token}")
        if "throttle" in model and "throttle-stream" not in model:
            return _error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        for status, kind in ((400, "ValidationException"), (500, "InternalServerException")):
            if f"error-{status}" in model:
                return _error(status, kind, f"Fake error {status} for {model}.")
        if "too-long" in model:
            return _error(400, "ValidationException", "Input is too long for requested model.")
        if "tool" in model and not (body.get("toolConfig") or {}).get("tools"):
            return _error(400, "ValidationException", "The fake tool model needs toolConfig.tools.")
        if "slow" in model:
            await asyncio.sleep(30)
        return model, body

    def _answer(self, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        usage: dict[str, Any] = {"inputTokens": input_tokens(body), "outputTokens": 0}
        if "cached" in model:
            usage.update(cacheReadInputTokens=7, cacheWriteInputTokens=3)
        if "tool" in model:
            tools = body["toolConfig"]["tools"]
            tool_input = {"city": "Paris"}
            usage["outputTokens"] = _words(json.dumps(tool_input))
            block: dict[str, Any] = {
                "toolUse": {"toolUseId": "tooluse_fake01", "name": tools[0]["toolSpec"]["name"], "input": tool_input}
            }
            stop_reason = "tool_use"
        else:
            text = f"You said: {_last_user_text(body)}"
            usage["outputTokens"] = _words(text)
            block = {"text": text}
            stop_reason = "end_turn"
        usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
        return block, stop_reason, usage

    # ------------------------------------------------------------ the endpoints

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept(request)
        if isinstance(accepted, web.Response):
            return accepted
        model, body = accepted
        if "garbage" in model:
            return web.Response(status=200, text="<html>definitely not json</html>", content_type="text/html")
        block, stop_reason, usage = self._answer(model, body)
        answer = {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": 12},
        }
        return web.json_response(answer, headers={"x-amzn-RequestId": REQUEST_ID})

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept(request)
        if isinstance(accepted, web.Response):
            return accepted
        model, body = accepted
        if "garbage" in model:
            return web.Response(status=200, text="<html>definitely not a stream</html>", content_type="text/html")
        block, stop_reason, usage = self._answer(model, body)
        headers = {"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": REQUEST_ID}
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        await resp.write(event("messageStart", {"role": "assistant"}))
        if "corrupt" in model:
            broken = bytearray(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
            broken[-1] ^= 0xFF  # a wrong message CRC
            await resp.write(bytes(broken))
            await resp.write_eof()
            return resp
        deltas: list[dict[str, Any]]
        if "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            await resp.write(event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
            raw = json.dumps(use["input"])
            deltas = [{"toolUse": {"input": raw[i : i + 5]}} for i in range(0, len(raw), 5)]
        else:
            words = block["text"].split(" ")
            deltas = [{"text": w if i == 0 else " " + w} for i, w in enumerate(words)]
        for n, delta in enumerate(deltas):
            await resp.write(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}))
            if "throttle-stream" in model:
                await resp.write(exception("throttlingException", "Too many tokens, please wait."))
                return resp
            if "stream-error" in model:
                await resp.write(exception("modelStreamErrorException", "The model stream failed."))
                return resp
            if "cut" in model and n == 1:
                await asyncio.sleep(0.05)  # let the two deltas reach the client, then drop the connection
                assert request.transport is not None
                request.transport.abort()
                return resp
        await resp.write(event("contentBlockStop", {"contentBlockIndex": 0}))
        # A message stop split across two writes: the client must reassemble frames.
        stop = event("messageStop", {"stopReason": stop_reason})
        await resp.write(stop[:7])
        await resp.write(stop[7:])
        await resp.write(event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
        await resp.write_eof()
        return resp
