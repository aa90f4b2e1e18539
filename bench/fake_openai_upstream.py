"""A fast fake OpenAI upstream for benchmarks: a raw asyncio Protocol + httptools parser on uvloop.

    .venv/bin/python bench/fake_openai_upstream.py [--host 127.0.0.1] [--port 0]

Prints `READY <port>` on stdout once listening. Keep-alive (and pipelining) supported.
`POST /v1/chat/completions` answers a fixed small `chat.completion` JSON (with usage); when the
request body contains `"stream": true` / `"stream":true` it answers a short SSE stream instead
(role chunk, 3 content chunks, finish chunk, usage chunk, `data: [DONE]`) with chunked transfer
encoding. Anything else gets a 404 in OpenAI's error shape. Every response is pre-built bytes, so
the server costs a parse and a write per request: it must never be the bottleneck of a gateway
benchmark (gateway_overhead.py measures it alone as the `direct` baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import httptools
import uvloop

CREATED = 1_717_000_000
MODEL = "gpt-4o-mini-2024-07-18"

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 8,
            "completion_tokens": 9,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    },
    separators=(",", ":"),
).encode()


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
    obj: dict = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


SSE_EVENTS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hello"}),
    _chunk({"content": " there"}),
    _chunk({"content": "!"}),
    _chunk({}, finish="stop"),
    _chunk({}, usage={"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}, choices=False),
    b"data: [DONE]\n\n",
]


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


RESP_JSON = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"x-request-id: req_bench\r\n"
    b"\r\n" % len(COMPLETION)
) + COMPLETION
RESP_SSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"x-request-id: req_bench\r\n"
    b"\r\n" + b"".join(_http_chunk(e) for e in SSE_EVENTS) + b"0\r\n\r\n"
)
NOT_FOUND_BODY = (
    b'{"error":{"message":"Unknown route","type":"invalid_request_error","param":null,"code":"unknown_url"}}'
)
RESP_404 = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(NOT_FOUND_BODY)
) + NOT_FOUND_BODY
CLOSE_HEADER = b"connection: close\r\n"


class FakeOpenAI(asyncio.Protocol):
    __slots__ = ("body", "method", "parser", "transport", "url")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    # -- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].rstrip(b"/")
        if method == b"POST" and path == b"/v1/chat/completions":
            body = b"".join(self.body)
            stream = b'"stream":true' in body or b'"stream": true' in body
            resp = RESP_SSE if stream else RESP_JSON
        else:
            resp = RESP_404
        keep = self.parser.should_keep_alive()
        if not keep:
            head, _, rest = resp.partition(b"\r\n")
            resp = head + b"\r\n" + CLOSE_HEADER + rest
        self.transport.write(resp)
        if not keep:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeOpenAI, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    async with server:
        await stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
