"""A minimal keep-alive HTTP/1.1 client for benchmarks: a blocking socket plus httptools' response
parser, so the client's own cost is small and identical for every server it is pointed at.

`Conn.post()` returns the status, the time to the first body byte carrying `data:` (TTFT for an
SSE stream; None when there was none) and the total time, both measured from just before the
request is written to just after the `recv()` that delivered the bytes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from time import perf_counter

import httptools


@dataclass
class Reply:
    status: int
    ttft_s: float | None
    total_s: float
    body: bytes


class Conn:
    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.sock: socket.socket | None = None
        self._reset()

    def _reset(self) -> None:
        self._done = False
        self._first: float | None = None
        self._t_recv = 0.0
        self._body: list[bytes] = []

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self._first is None and b"data:" in body:
            self._first = self._t_recv
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._done = True

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        if self.sock is None:
            self.sock = self._connect()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = head.encode("latin-1") + b"\r\n" + body
        self._reset()
        parser = httptools.HttpResponseParser(self)
        sock = self.sock
        t0 = perf_counter()
        sock.sendall(request)
        while not self._done:
            data = sock.recv(65536)
            self._t_recv = perf_counter()
            if not data:
                self.close()
                raise ConnectionError(f"{self.host}:{self.port} closed the connection mid-response")
            parser.feed_data(data)
        total = perf_counter() - t0
        if not parser.should_keep_alive():
            self.close()
        ttft = None if self._first is None else self._first - t0
        return Reply(parser.get_status_code(), ttft, total, b"".join(self._body))
