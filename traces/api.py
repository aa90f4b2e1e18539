"""GET /api/traces (filters, cursor pagination) and GET /api/traces/<id>."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.auth import request_project

from .selectors import TraceFilters, trace_get, trace_list

MAX_LIMIT = 500


def _datetime(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    value = parse_datetime(raw)
    if value is None:
        raise ValidationError({name: "Use an ISO 8601 date-time, e.g. 2026-11-28T10:00:00Z."})
    return value


class TraceListApi(APIView):
    def get(self, request: Request) -> Response:
        project = request_project(request)
        qp = request.query_params
        status = qp.get("status", "")
        if status and status not in ("ok", "error") and not status.isdigit():
            raise ValidationError({"status": "Use ok, error or an HTTP status code."})
        try:
            limit = min(int(qp.get("limit", 50)), MAX_LIMIT)
        except ValueError:
            raise ValidationError({"limit": "Must be an integer."})
        if limit < 1:
            raise ValidationError({"limit": "Must be at least 1."})
        filters = TraceFilters(
            since=_datetime(request, "since"),
            until=_datetime(request, "until"),
            model=qp.get("model", ""),
            provider=qp.get("provider", ""),
            status=status,
            alias=qp.get("alias", ""),
            metadata_key=qp.get("metadata_key", ""),
            metadata_value=qp.get("metadata_value", ""),
            q=qp.get("q", ""),
        )
        try:
            data, next_cursor = trace_list(project_id=project.id, filters=filters, cursor=qp.get("cursor"), limit=limit)
        except ValueError:
            raise ValidationError({"cursor": "Invalid cursor."})
        return Response({"data": data, "next_cursor": next_cursor})


class TraceDetailApi(APIView):
    def get(self, request: Request, trace_id: uuid.UUID) -> Response:
        project = request_project(request)
        trace = trace_get(project_id=project.id, trace_id=trace_id)
        if trace is None:
            raise NotFound("No such trace.")
        return Response(trace)
