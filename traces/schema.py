"""OpenAPI description of the traces API (drf-spectacular): the shared filter parameters and the
response shapes. Documentation only: the views build their answers from selectors."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers

from .export import FORMATS
from .filters import ALL_TIME, RANGES
from .stats import BUCKETS


def _param(name: str, kind: object, description: str, **kw: object) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description, **kw)  # type: ignore[arg-type]


_RANGE = _param("range", str, "A named window ending now; overrides since/until.", enum=[*RANGES, "custom"])
_RANGE_ALL = _param(
    "range",
    str,
    "A named window ending now, or all (no time bound); overrides since/until.",
    enum=[*RANGES, ALL_TIME, "custom"],
)
_FIELDS = [
    _param("since", OpenApiTypes.DATETIME, "Start (inclusive), ISO 8601."),
    _param("until", OpenApiTypes.DATETIME, "End (exclusive), ISO 8601."),
    _param("model", str, "Model asked for or that answered, e.g. openai/gpt-4o-mini."),
    _param("alias", str, "Alias the request named, e.g. smart."),
    _param("provider", str, "Provider that answered, e.g. anthropic."),
    _param("status", str, "ok, error, or an HTTP status such as 429."),
    _param("api_key", int, "Id of the API key that made the call."),
    _param("metadata_key", str, "Traces whose metadata has this key..."),
    _param("metadata_value", str, "...with this value (needs metadata_key)."),
    _param("tag", str, "Traces with this tag (written with it or added later)."),
    _param("min_cost", float, "Minimum cost in USD."),
    _param("min_latency_ms", float, "Minimum latency in milliseconds."),
    _param("q", str, "Case-insensitive text in the prompt or the response."),
    _param("project", str, "Project slug (session auth only; a key is bound to its project)."),
]
FILTERS = [_RANGE, *_FIELDS]
LIST_FILTERS = [_RANGE_ALL, *_FIELDS]  # the list and export also take range=all
LIST_PARAMS = [
    *LIST_FILTERS,
    _param("limit", int, "Page size, 1-500 (default 50)."),
    _param("cursor", str, "next_cursor from the previous page."),
]
TIMESERIES_PARAMS = [*FILTERS, _param("bucket", str, "Point width; default picked from the range.", enum=list(BUCKETS))]
EXPORT_PARAMS = [*LIST_FILTERS, _param("format", str, "jsonl (default), csv, parquet or openai.", enum=list(FORMATS))]

_MEASURES: dict[str, Any] = {
    "requests": serializers.IntegerField(),
    "errors": serializers.IntegerField(),
    "error_rate": serializers.FloatField(),
    "cost_usd": serializers.FloatField(),
    "unpriced": serializers.IntegerField(help_text="Successful calls whose price is unknown."),
    "prompt_tokens": serializers.IntegerField(),
    "completion_tokens": serializers.IntegerField(),
    "cached_tokens": serializers.IntegerField(),
    **{f"{m}_p{p}_ms": serializers.FloatField(allow_null=True) for m in ("latency", "ttft") for p in (50, 95, 99)},
}
TRACE = inline_serializer(
    "Trace",
    {
        "trace_id": serializers.UUIDField(),
        "timestamp": serializers.DateTimeField(),
        "endpoint": serializers.CharField(),
        "requested_model": serializers.CharField(),
        "resolved_model": serializers.CharField(),
        "provider": serializers.CharField(),
        "status": serializers.IntegerField(),
        "cost_total_usd": serializers.FloatField(allow_null=True),
        "latency_ms": serializers.FloatField(),
        "route_policy": serializers.CharField(help_text='The routing policy that picked the model ("" if none).'),
        "route_cluster": serializers.CharField(help_text="The prompt's most likely cluster when routed."),
        "route_predicted": serializers.DictField(
            child=serializers.FloatField(), help_text="Each candidate's predicted error when routed."
        ),
        "route_decision_ms": serializers.FloatField(),
        "route_note": serializers.CharField(help_text="Why the router decided as it did (truncation, no data)."),
        "metadata": serializers.DictField(child=serializers.CharField()),
        "tags": serializers.ListField(child=serializers.CharField()),
        "feedback": serializers.JSONField(required=False),
        "request_messages": serializers.JSONField(required=False, help_text="Detail only."),
        "response_message": serializers.JSONField(required=False, help_text="Detail only."),
    },
)
TRACE_PAGE = inline_serializer(
    "TracePage", {"data": serializers.ListField(child=TRACE), "next_cursor": serializers.CharField(allow_null=True)}
)
TIMESERIES = inline_serializer(
    "Timeseries",
    {
        "bucket": serializers.CharField(),
        "since": serializers.DateTimeField(),
        "until": serializers.DateTimeField(),
        "source": serializers.CharField(
            help_text="traces_daily (the daily rollup for whole days, the hourly one for the window's ends),"
            " traces_hourly (rollup) or traces (raw scan)."
        ),
        "points": serializers.ListField(
            child=inline_serializer("Point", {"t": serializers.DateTimeField(), **_MEASURES})
        ),
    },
)
MODELS = inline_serializer(
    "ModelStats",
    {
        "since": serializers.DateTimeField(),
        "until": serializers.DateTimeField(),
        "source": serializers.CharField(),
        "models": serializers.ListField(
            child=inline_serializer(
                "ModelRow", {"model": serializers.CharField(), "provider": serializers.CharField(), **_MEASURES}
            )
        ),
        "totals": inline_serializer("Totals", _MEASURES),
    },
)
INGESTED = inline_serializer(
    "Ingested",
    {"ingested": serializers.IntegerField(), "trace_ids": serializers.ListField(child=serializers.UUIDField())},
)
