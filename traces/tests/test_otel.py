"""OpenTelemetry export: the trace writer, running for real, sends each written trace as an OTLP
span to a real OTLP/HTTP receiver on loopback, with the GenAI semantic-convention attributes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from opentracy_site import clickhouse
from traces import otel
from traces.writer import TraceWriter

OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_SAMPLER",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
)
SECRET_PROMPT = "my password is hunter2"
SECRET_ANSWER = "noted: hunter2"


class Receiver:
    """An OTLP/HTTP traces endpoint: decodes each protobuf POST and keeps it with its headers."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, str], ExportTraceServiceRequest]] = []  # path, headers, body
        self.requests = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.headers["content-type"] == "application/x-protobuf"
                received.append((self.path, dict(self.headers), ExportTraceServiceRequest.FromString(body)))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def spans(self) -> dict[str, tuple[Span, dict[str, Any]]]:
        """Received spans by trace id (hex), each with its resource attributes."""
        found = {}
        for _path, _headers, request in self.requests:
            for rs in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        found[span.trace_id.hex()] = (span, resource)
        return found

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value") or ""
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def _attrs(span: Span) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    otel.shutdown()  # settings are read afresh on the next export
    yield monkeypatch
    otel.shutdown()


@pytest.fixture
def receiver(clean_env: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver()
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=otlp-secret-1,x-tenant=acme")
    clean_env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    yield r
    otel.shutdown()
    r.stop()


def _chat(**extra: Any) -> dict[str, Any]:
    return {
        "trace_id": str(uuid.uuid4()),
        "timestamp": time.time() - 5,
        "project_id": 4242,
        "api_key_id": 77,
        "endpoint": "chat",
        "requested_model": "fast",
        "alias": "fast",
        "resolved_model": "openai/gpt-4o-mini",
        "provider": "openai",
        "request_messages": orjson.dumps(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": SECRET_PROMPT}]
        ).decode(),
        "request_params": orjson.dumps(
            {"temperature": 0.2, "max_completion_tokens": 64, "top_p": 0.9, "stop": ["END"], "stream": True}
        ).decode(),
        "response_message": orjson.dumps({"role": "assistant", "content": SECRET_ANSWER}).decode(),
        "finish_reason": "stop",
        "stream": True,
        "prompt_tokens": 21,
        "completion_tokens": 9,
        "cached_tokens": 4,
        "latency_ms": 812.5,
        "ttft_ms": 120.25,
        "retries": 1,
        "fallbacks": 1,
        **extra,
    }


def _failed() -> dict[str, Any]:
    return _chat(
        status=429,
        error_class="rate_limit_error",
        error_message="Rate limit reached for gpt-4o-mini.",
        response_message="",
        finish_reason="",
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        ttft_ms=None,
    )


def _embedding() -> dict[str, Any]:
    return _chat(
        endpoint="embeddings",
        requested_model="text-embedding-3-small",
        alias="",
        resolved_model="openai/text-embedding-3-small",
        request_messages='["hello"]',
        request_params='{"encoding_format":"base64"}',
        response_message='{"count":1,"dimensions":1536}',
        finish_reason="",
        completion_tokens=0,
        cached_tokens=0,
        ttft_ms=None,
        retries=0,
        fallbacks=0,
    )


def _run_writer(records: list[dict[str, Any]], spool: Path) -> TraceWriter:
    writer = TraceWriter(batch_size=100, interval_s=0.05, queue_size=100, spool_dir=spool, replay_interval_s=60)
    writer.start()
    for r in records:
        writer.submit(r)
    writer.flush()
    writer.stop()  # also flushes the span exporter
    assert writer.stats["written"] == len(records) and writer.stats["write_errors"] == 0
    return writer


def _stored_cost(trace_id: str) -> float | None:
    _c, rows = clickhouse.query(
        "SELECT cost_total_usd FROM traces WHERE trace_id = {id:UUID}", {"id": uuid.UUID(trace_id)}
    )
    return rows[0][0]


@pytest.mark.django_db(transaction=True)  # the writer thread reads per-project price overrides
def test_written_traces_arrive_as_genai_spans(receiver: Receiver, tmp_path: Path) -> None:
    ok, failed, emb = _chat(), _failed(), _embedding()
    _run_writer([ok, failed, emb], tmp_path)

    spans = receiver.spans()
    assert {uuid.UUID(r["trace_id"]).hex for r in (ok, failed, emb)} <= spans.keys()
    path, headers, _req = receiver.requests[0]
    assert path == "/v1/traces"
    assert headers["x-api-key"] == "otlp-secret-1" and headers["x-tenant"] == "acme"

    span, resource = spans[uuid.UUID(ok["trace_id"]).hex]
    assert resource["service.name"] == "opentracy-engine"
    assert span.name == "chat fast"
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.trace_id == uuid.UUID(ok["trace_id"]).bytes and span.parent_span_id == b""
    assert span.span_id == uuid.UUID(ok["trace_id"]).bytes[8:]
    assert abs(span.start_time_unix_nano - ok["timestamp"] * 1e9) < 2_000  # µs precision, as stored
    assert span.end_time_unix_nano - span.start_time_unix_nano == 812_500_000
    assert span.status.code == Status.STATUS_CODE_UNSET
    attrs = _attrs(span)
    cost = _stored_cost(ok["trace_id"])
    assert cost is not None and cost > 0
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "fast",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.stop_sequences": ["END"],
        "gen_ai.request.stream": True,
        "gen_ai.usage.input_tokens": 21,
        "gen_ai.usage.output_tokens": 9,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "opentracy.project_id": 4242,
        "opentracy.api_key_id": 77,
        "opentracy.endpoint": "chat",
        "opentracy.provider": "openai",
        "opentracy.resolved_model": "openai/gpt-4o-mini",
        "opentracy.alias": "fast",
        "opentracy.cost_usd": pytest.approx(cost),
        "opentracy.retries": 1,
        "opentracy.fallbacks": 1,
        "opentracy.ttft_ms": 120.25,
    }

    span, _ = spans[uuid.UUID(failed["trace_id"]).hex]
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert span.status.message == "Rate limit reached for gpt-4o-mini."
    attrs = _attrs(span)
    assert attrs["error.type"] == "rate_limit_error" and attrs["opentracy.status_code"] == 429
    assert "opentracy.cost_usd" not in attrs and "opentracy.ttft_ms" not in attrs  # unknown, not zero

    span, _ = spans[uuid.UUID(emb["trace_id"]).hex]
    assert span.name == "embeddings text-embedding-3-small"
    attrs = _attrs(span)
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.embeddings.dimension.count"] == 1536
    assert attrs["gen_ai.request.encoding_formats"] == ["base64"]

    # Privacy: no prompt or answer text leaves by default.
    everything = b"".join(req.SerializeToString() for _p, _h, req in receiver.requests)
    assert SECRET_PROMPT.encode() not in everything and SECRET_ANSWER.encode() not in everything
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for s, _ in spans.values() for k in _attrs(s))


@pytest.mark.django_db(transaction=True)
def test_a_gateway_call_arrives_as_a_span(receiver: Receiver, client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET_PROMPT}], temperature=0.3, max_tokens=20
    )
    answer, trace_id = raw.parse(), uuid.UUID(raw.headers["x-opentracy-trace-id"]).hex
    deadline = time.monotonic() + 10  # the engine's own writer exports it, after its next flush
    while trace_id not in receiver.spans() and time.monotonic() < deadline:
        time.sleep(0.05)
    span, _ = receiver.spans()[trace_id]
    attrs = _attrs(span)
    assert span.name == "chat gpt-4o-mini" and span.kind == Span.SPAN_KIND_CLIENT
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.temperature"] == 0.3 and attrs["gen_ai.request.max_tokens"] == 20
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attrs["gen_ai.response.finish_reasons"] == [answer.choices[0].finish_reason]
    assert attrs["opentracy.project_id"] > 0 and attrs["opentracy.api_key_id"] > 0
    assert SECRET_PROMPT not in str(attrs)


def test_spooled_traces_are_exported_when_replayed(receiver: Receiver, tmp_path: Path) -> None:
    writer = TraceWriter(batch_size=10, interval_s=0.05, queue_size=1, spool_dir=tmp_path, replay_interval_s=60)
    queued, spooled = _chat(), _chat()
    writer.submit(queued)
    writer.submit(spooled)  # the queue is full: straight to the spool, exported once replayed
    writer.start()
    writer.flush()
    writer.stop()
    assert writer.stats["written"] == 1 and writer.stats["replayed"] == 1
    assert {uuid.UUID(r["trace_id"]).hex for r in (queued, spooled)} <= receiver.spans().keys()


def test_message_content_only_with_the_opt_in(
    receiver: Receiver, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    clean_env.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    tool = _chat(
        request_messages=orjson.dumps(
            [
                {"role": "user", "content": [{"type": "text", "text": SECRET_PROMPT}]},
                {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ]
        ).decode()
    )
    ok = _chat()
    _run_writer([ok, tool], tmp_path)

    span, resource = receiver.spans()[uuid.UUID(ok["trace_id"]).hex]
    assert resource["service.name"] == "gateway-eu"
    attrs = _attrs(span)
    assert orjson.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]},
    ]
    assert orjson.loads(attrs["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": SECRET_ANSWER}], "finish_reason": "stop"}
    ]
    span, _ = receiver.spans()[uuid.UUID(tool["trace_id"]).hex]
    assert [m["parts"] for m in orjson.loads(_attrs(span)["gen_ai.input.messages"])] == [
        [{"type": "text", "content": SECRET_PROMPT}],
        [{"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}],
        [{"type": "tool_call_response", "id": "c1", "response": "42"}],
    ]


def test_signal_endpoint_and_headers_win(receiver: Receiver, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/nowhere")
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.url}/custom/traces")
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20tok")
    record = _chat()
    _run_writer([record], tmp_path)
    assert uuid.UUID(record["trace_id"]).hex in receiver.spans()
    path, headers, _req = receiver.requests[0]
    assert path == "/custom/traces" and headers["authorization"] == "Bearer tok"


def test_unreachable_collector_never_costs_a_trace(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conftest import free_port

    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    clean_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    clean_env.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    records = [_chat(request_params="not json"), _chat()]
    writer = _run_writer(records, tmp_path)
    assert writer.stats["spilled"] == 0
    _c, rows = clickhouse.query(
        "SELECT count() FROM traces WHERE trace_id IN {ids:Array(UUID)}",
        {"ids": [uuid.UUID(r["trace_id"]) for r in records]},
    )
    assert rows[0][0] == 2


def test_nothing_is_created_without_an_endpoint(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _run_writer([_chat(), _failed()], tmp_path)
    otel.export([])  # the disabled path, after the writer has read the settings
    assert otel._loaded and otel._exporter is None
    assert not [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]
