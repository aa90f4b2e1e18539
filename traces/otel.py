"""OpenTelemetry export: each trace written to ClickHouse also leaves as one OTLP/HTTP span following
the GenAI semantic conventions, so an existing observability stack sees the same calls.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Spans are built
on the trace writer's thread once a batch is stored, never on the request path, and sent by the SDK's
BatchSpanProcessor from its own thread through a bounded queue (OTEL_BSP_*). The official exporter
reads endpoint, headers, timeout and compression from the standard OTEL_EXPORTER_OTLP_* variables.
Prompt and answer text stay out unless OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT opts in.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from opentracy_site.env import env_bool, env_str

from .ch_sql import TRACE_COLUMNS

if TYPE_CHECKING:  # the SDK is imported only once export is enabled: ~0.2 s of start-up otherwise
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

# Engine provider names → gen_ai.provider.name well-known values; the rest keep their own name.
PROVIDER_NAMES = {
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}
OPERATIONS = {"chat": "chat", "messages": "chat", "ingest": "chat", "embeddings": "embeddings"}
# request_params key → GenAI attribute and its type (a float attribute also takes an int).
REQUEST_PARAMS: dict[str, tuple[str, type]] = {
    **{k: (f"gen_ai.request.{k}", float) for k in ("temperature", "top_p", "top_k", "frequency_penalty")},
    **{k: ("gen_ai.request.max_tokens", int) for k in ("max_tokens", "max_completion_tokens")},
    **{"presence_penalty": ("gen_ai.request.presence_penalty", float), "seed": ("gen_ai.request.seed", int)},
    **{"n": ("gen_ai.request.choice.count", int), "stream": ("gen_ai.request.stream", bool)},
}


@dataclass
class _Ids:  # the record being exported's ids, handed to the SDK so OTel ids equal the dashboard's
    trace_id: int = 0
    span_id: int = 0


@dataclass
class _Exporter:
    provider: TracerProvider
    tracer: Tracer
    ids: _Ids
    capture_content: bool


_lock = threading.Lock()  # export() runs on the writer thread; shutdown() may come from another
_loaded = False
_exporter: _Exporter | None = None


def _capture_content() -> bool:
    raw = env_str("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT").strip().lower()
    if raw in ("span_only", "span_and_event", "event_only"):  # newer instrumentations' spellings
        return True
    return raw != "no_content" and env_bool("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", False)


def _load() -> _Exporter | None:
    endpoint = env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or env_bool("OTEL_SDK_DISABLED", False):
        return None
    # Imported only when enabled: a deployment without OTel pays nothing for it.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    ids = _Ids()

    class RecordIds(IdGenerator):
        def generate_trace_id(self) -> int:
            return ids.trace_id

        def generate_span_id(self) -> int:
            return ids.span_id

    resource = Resource.create({SERVICE_NAME: env_str("OTEL_SERVICE_NAME") or "opentracy-engine"})
    # Not the global provider: the engine's spans should not capture or disturb other instrumentation.
    provider = TracerProvider(resource=resource, id_generator=RecordIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("exporting traces as OpenTelemetry spans")
    return _Exporter(provider, provider.get_tracer("opentracy.traces"), ids, _capture_content())


def export(records: list[dict[str, Any]]) -> None:
    """Queue one span per written record (as inserted: cost included). Never raises."""
    global _loaded, _exporter
    if _loaded and _exporter is None:
        return  # not configured: the common case costs one check
    with _lock:
        if not _loaded:
            try:
                _exporter = _load()
            except Exception:  # a bad setting disables the export, never the trace writer
                log.exception("OpenTelemetry export could not start: disabled")
            _loaded = True
        if (exporter := _exporter) is None:
            return
        for record in records:
            try:
                _emit(exporter, {**TRACE_COLUMNS, **record})
            except Exception:  # an odd record or a broken exporter must never cost the writer
                log.exception("could not export trace %s to OpenTelemetry", record.get("trace_id", "?"))


def shutdown(timeout_s: float = 10.0) -> None:
    """Send what is queued, stop the exporter thread, forget the settings (tests reset with it)."""
    global _loaded, _exporter
    with _lock:
        exporter, _exporter, _loaded = _exporter, None, False
    if exporter is not None:
        try:
            exporter.provider.force_flush(int(timeout_s * 1000))
            exporter.provider.shutdown()
        except Exception:
            log.exception("OpenTelemetry exporter shutdown failed")


def _emit(exporter: _Exporter, r: dict[str, Any]) -> None:
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode

    trace_id = uuid.UUID(str(r["trace_id"])).int
    exporter.ids.trace_id, exporter.ids.span_id = trace_id, (trace_id & (2**64 - 1)) or 1
    start_ns = round(float(r["timestamp"]) * 1e6) * 1000  # the record's epoch float, to the µs
    operation = OPERATIONS.get(r["endpoint"], r["endpoint"])
    span = exporter.tracer.start_span(
        f"{operation} {r['requested_model']}".strip(),
        context=Context(),  # a root span whatever is current on this thread
        kind=SpanKind.CLIENT,
        attributes=_attributes(r, operation, exporter.capture_content),
        start_time=start_ns,
    )
    if r["status"] != 200:
        span.set_status(Status(StatusCode.ERROR, r["error_message"] or None))
    span.end(end_time=start_ns + round(float(r["latency_ms"]) * 1e6))


def _json(text: str) -> Any:
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None


def _attributes(r: dict[str, Any], operation: str, capture: bool) -> dict[str, AttributeValue]:
    a: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.usage.input_tokens": int(r["prompt_tokens"]),
        "gen_ai.usage.output_tokens": int(r["completion_tokens"]),
        "opentracy.project_id": int(r["project_id"]),
        "opentracy.api_key_id": int(r["api_key_id"]),
        "opentracy.retries": int(r["retries"]),
        "opentracy.fallbacks": int(r["fallbacks"]),
        "opentracy.endpoint": r["endpoint"],
    }
    if r["provider"]:  # both names: gen_ai.system is deprecated but still what many backends key on
        a["gen_ai.provider.name"] = a["gen_ai.system"] = PROVIDER_NAMES.get(r["provider"], r["provider"])
        a["opentracy.provider"] = r["provider"]
    if r["requested_model"]:
        a["gen_ai.request.model"] = r["requested_model"]
    if r["resolved_model"]:  # "openai@eu/gpt-4o": the model is what follows the provider
        a["gen_ai.response.model"] = r["resolved_model"].split("/", 1)[-1]
        a["opentracy.resolved_model"] = r["resolved_model"]
    if r["finish_reason"]:
        a["gen_ai.response.finish_reasons"] = [r["finish_reason"]]
    if r["cached_tokens"]:
        a["gen_ai.usage.cache_read.input_tokens"] = int(r["cached_tokens"])
    if r["alias"]:
        a["opentracy.alias"] = r["alias"]
    if r["cost_total_usd"] is not None:  # an unknown price is left out, never reported as 0
        a["opentracy.cost_usd"] = float(r["cost_total_usd"])
    if r["ttft_ms"] is not None:
        a["opentracy.ttft_ms"] = float(r["ttft_ms"])
    if r["status"] != 200:
        a["error.type"] = r["error_class"] or str(r["status"])
        a["opentracy.status_code"] = int(r["status"])
    params = _json(r["request_params"])
    if isinstance(params, dict):
        for key, (attr, kind) in REQUEST_PARAMS.items():
            value = params.get(key)
            if isinstance(value, (int, float) if kind is float else kind) and isinstance(value, bool) == (kind is bool):
                a[attr] = kind(value)
        stop = params.get("stop", params.get("stop_sequences"))
        stop = [stop] if isinstance(stop, str) else stop
        if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
            a["gen_ai.request.stop_sequences"] = stop
        if operation == "embeddings" and isinstance(params.get("encoding_format"), str):
            a["gen_ai.request.encoding_formats"] = [params["encoding_format"]]
    if operation == "embeddings":
        shape = _json(r["response_message"])  # the writer keeps {"count", "dimensions"}, not vectors
        if isinstance(shape, dict) and shape.get("dimensions"):
            a["gen_ai.embeddings.dimension.count"] = int(shape["dimensions"])
    elif capture:
        a.update(_messages(r))
    return a


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """An OpenAI-form message's content as GenAI convention parts."""
    content = message.get("content")
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append({"type": "text", "content": p.get("text", "")})
            elif isinstance(p, dict):
                parts.append(p)  # images, audio, …: passed on as generic parts
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), **{k: fn.get(k) for k in ("name", "arguments")}})
    return parts


def _messages(r: dict[str, Any]) -> dict[str, AttributeValue]:
    """gen_ai.input.messages / gen_ai.output.messages as JSON strings (span attributes cannot nest)."""
    out: dict[str, AttributeValue] = {}
    sent = _json(r["request_messages"])
    if isinstance(sent, list):
        msgs = [{"role": m.get("role", "user"), "parts": _parts(m)} for m in sent if isinstance(m, dict)]
        out["gen_ai.input.messages"] = orjson.dumps(msgs).decode()
    answer = _json(r["response_message"])
    if isinstance(answer, dict):
        msg = {"role": answer.get("role") or "assistant", "parts": _parts(answer), "finish_reason": r["finish_reason"]}
        out["gen_ai.output.messages"] = orjson.dumps([msg]).decode()
    return out
