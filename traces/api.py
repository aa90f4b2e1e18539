"""The traces REST API: list (filters, cursor pagination), detail and annotations, stats for the
overview, streamed export, and ingest of traces made elsewhere."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.auth import KeyPrincipal, request_project
from gateway.models import ApiKey

from . import export, schema, stats
from .filters import FilterError, TraceFilters, parse_filters
from .ingest import MAX_BODY_BYTES, PayloadTooLarge, parse_body
from .selectors import trace_get, trace_iter, trace_list
from .services import annotation_add, trace_ingest

MAX_LIMIT = 500


def invalid(errors: dict[str, str]) -> ValidationError:
    """DRF's 400 body, each field with a list of messages as its serializers give."""
    return ValidationError({name: [message] for name, message in errors.items()})


def filters_of(request: Request, default_range: str = "", *, all_time: bool = True) -> TraceFilters:
    """all_time: `range=all` accepted (the list and export: the traces page's links carry it);
    stats need a window and refuse it."""
    try:
        return parse_filters(request.query_params, default_range=default_range, all_time=all_time)
    except FilterError as exc:
        raise invalid(exc.errors) from exc


class TraceListApi(APIView):
    @extend_schema(parameters=schema.LIST_PARAMS, responses=schema.TRACE_PAGE, operation_id="traces_list")
    def get(self, request: Request) -> Response:
        project = request_project(request)
        filters = filters_of(request)
        try:
            limit = int(request.query_params.get("limit", 50))
        except ValueError:
            raise invalid({"limit": "Must be an integer."})
        if not 1 <= limit <= MAX_LIMIT:
            raise invalid({"limit": f"Must be between 1 and {MAX_LIMIT}."})
        try:
            data, next_cursor = trace_list(
                project_id=project.id, filters=filters, cursor=request.query_params.get("cursor"), limit=limit
            )
        except ValueError:
            raise invalid({"cursor": "Invalid cursor."})
        return Response({"data": data, "next_cursor": next_cursor})


class AnnotationSerializer(serializers.Serializer):
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=50)
    remove_tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=50)
    score = serializers.FloatField(required=False, min_value=0, max_value=10)
    comment = serializers.CharField(required=False, max_length=5000, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise ValidationError("Give tags, remove_tags, score or comment.")
        return attrs


def _user_id(request: Request) -> int:
    """Who annotated: the person, or 0 for a call made with an API key."""
    return 0 if isinstance(request.user, KeyPrincipal) else int(request.user.pk or 0)


class TraceDetailApi(APIView):
    @extend_schema(responses=schema.TRACE)
    def get(self, request: Request, trace_id: uuid.UUID) -> Response:
        project = request_project(request)
        trace = trace_get(project_id=project.id, trace_id=trace_id)
        if trace is None:
            raise NotFound("No such trace.")
        return Response(trace)

    @extend_schema(request=AnnotationSerializer, responses=schema.TRACE)
    def patch(self, request: Request, trace_id: uuid.UUID) -> Response:
        """Add or remove tags, or give feedback (a 0–10 score with a comment)."""
        project = request_project(request)
        if trace_get(project_id=project.id, trace_id=trace_id) is None:
            raise NotFound("No such trace.")
        body = AnnotationSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        annotation_add(
            project_id=project.id,
            trace_id=trace_id,
            user_id=_user_id(request),
            tags_add=data.get("tags"),
            tags_remove=data.get("remove_tags"),
            score=data.get("score"),
            comment=data.get("comment", ""),
        )
        return Response(trace_get(project_id=project.id, trace_id=trace_id))


class StatsTimeseriesApi(APIView):
    @extend_schema(parameters=schema.TIMESERIES_PARAMS, responses=schema.TIMESERIES)
    def get(self, request: Request) -> Response:
        project = request_project(request)
        bucket = request.query_params.get("bucket", "")
        errors = {} if not bucket or bucket in stats.BUCKETS else {"bucket": f"Use one of {', '.join(stats.BUCKETS)}."}
        try:
            filters = parse_filters(request.query_params, default_range="24h")
        except FilterError as exc:
            errors.update(exc.errors)
        if errors:
            raise invalid(errors)
        try:
            data = stats.timeseries(project_id=project.id, filters=filters, bucket=bucket)
        except ValueError as exc:
            raise invalid({"bucket": str(exc)}) from exc
        return Response(data)


class StatsModelsApi(APIView):
    @extend_schema(parameters=schema.FILTERS, responses=schema.MODELS)
    def get(self, request: Request) -> Response:
        project = request_project(request)
        return Response(stats.by_model(project_id=project.id, filters=filters_of(request, "24h", all_time=False)))


class TraceExportApi(APIView):
    """The traces matching the filters, streamed as JSONL, CSV, Parquet or OpenAI fine-tuning JSONL."""

    @extend_schema(parameters=schema.EXPORT_PARAMS, responses={(200, "*/*"): OpenApiTypes.BINARY})
    def get(self, request: Request) -> StreamingHttpResponse:
        project = request_project(request)
        kind = request.query_params.get("format", "jsonl")
        if kind not in export.FORMATS:
            raise invalid({"format": f"Use one of {', '.join(export.FORMATS)}."})
        rows = trace_iter(project_id=project.id, filters=filters_of(request))
        content_type, extension = export.FORMATS[kind]
        response = StreamingHttpResponse(export.stream(export.WRITERS[kind](rows)), content_type=content_type)
        name = f"traces-{project.slug}-{timezone.now():%Y%m%d-%H%M%S}.{extension}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


def _read_body(request: Request) -> bytes:
    """The raw body, at most MAX_BODY_BYTES (413 past it). Read from Django's request stream: DRF's
    `request.stream` is empty without a Content-Length (a chunked upload), and `request.body` has a
    limit (DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB) meant for forms."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    raw = request._request.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    return raw


class TraceIngestApi(APIView):
    """Traces produced elsewhere (OpenAI-format request/response pairs, JSON or JSON Lines), all or none."""

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": OpenApiTypes.STR},
        responses={201: schema.INGESTED},
    )
    def post(self, request: Request) -> Response:
        project = request_project(request)
        records = parse_body(_read_body(request), request.content_type or "", retention_days=project.retention_days)
        api_key_id = request.auth.id if isinstance(request.auth, ApiKey) else 0
        trace_ids = trace_ingest(project=project, items=records, api_key_id=api_key_id)
        return Response({"ingested": len(trace_ids), "trace_ids": trace_ids}, status=201)
