"""The canary REST API of a distillation job (project-scoped like the rest of distillation/api.py):
start a canary on an alias, read both sides on live traffic, change the share, judge now, promote
(the full swap) or stop. Another project's job is 404."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.api import drf_error
from gateway.auth import request_project

from . import approval, canary, selectors, tasks
from .api import job_get
from .models import Canary, DistillationJob


class CanaryStartSerializer(serializers.Serializer):
    alias = serializers.CharField(max_length=100, help_text="The alias whose traffic the student shares.")
    percent = serializers.IntegerField(
        min_value=1, max_value=canary.MAX_PERCENT, help_text="Share of the alias's requests sent to the student."
    )
    serve = serializers.ChoiceField(
        choices=approval.SERVING, required=False, help_text="`local` or `vllm`; default OPENTRACY_STUDENT_SERVING."
    )


class CanaryPercentSerializer(serializers.Serializer):
    percent = serializers.IntegerField(min_value=1, max_value=canary.MAX_PERCENT)


def _latest(job: DistillationJob) -> Canary:
    found = job.canaries.select_related("student").first()
    if found is None:
        raise NotFound("This job has no canary.")
    return found


def _call(action: Any, **kwargs: Any) -> Any:
    try:
        return action(**kwargs)
    except DjangoValidationError as exc:
        raise drf_error(exc) from exc


class JobCanaryApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="distillation_jobs_canary_read")
    def get(self, request: Request, pk: int) -> Response:
        """The job's latest canary: both sides' requests, error rate, cost per 1k answered requests,
        latency and judged quality on live traffic."""
        return Response(selectors.canary_report(_latest(job_get(request_project(request), pk))))

    @extend_schema(request=CanaryStartSerializer, responses={201: OpenApiTypes.OBJECT},
                   operation_id="distillation_jobs_canary_start")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Register the trained student and send `percent` of the alias's requests to it (the alias's
        target answers the rest, and any request the student fails). 502 when vLLM refused the adapter."""
        job = job_get(request_project(request), pk)
        body = CanaryStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            started = _call(canary.canary_start, job=job, alias=data["alias"], percent=data["percent"],
                            user=request.user, serve=data.get("serve"))  # fmt: skip
        except approval.ServingFailed as exc:
            return Response({"detail": str(exc)}, status=502)
        return Response(selectors.canary_report(started), status=201)

    @extend_schema(request=CanaryPercentSerializer, responses={200: OpenApiTypes.OBJECT},
                   operation_id="distillation_jobs_canary_update")  # fmt: skip
    def patch(self, request: Request, pk: int) -> Response:
        """Change the student's share of a running canary."""
        found = _latest(job_get(request_project(request), pk))
        body = CanaryPercentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        updated = _call(canary.canary_update, canary=found, percent=body.validated_data["percent"])
        return Response(selectors.canary_report(updated))


class JobCanaryJudgeApi(APIView):
    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT}, operation_id="distillation_jobs_canary_judge")
    def post(self, request: Request, pk: int) -> Response:
        """Queue a judging pass over the canary's answers not judged yet (it also runs every
        OPENTRACY_CANARY_JUDGE_INTERVAL_S); read the result from GET .../canary."""
        found = _latest(job_get(request_project(request), pk))
        tasks.canary_judge.delay(found.pk)
        return Response(selectors.canary_report(found), status=202)


class JobCanaryPromoteApi(APIView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT}, operation_id="distillation_jobs_canary_promote")
    def post(self, request: Request, pk: int) -> Response:
        """The full swap: the alias is re-pointed at the student (recorded in its history; roll back
        works as after an approval) and the canary ends."""
        found = _latest(job_get(request_project(request), pk))
        student = _call(canary.canary_promote, canary=found, user=request.user)
        return Response({"student": student.name, "alias": student.alias, "target": student.model})


class JobCanaryStopApi(APIView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT}, operation_id="distillation_jobs_canary_stop")
    def post(self, request: Request, pk: int) -> Response:
        """End the canary: the alias's target answers everything again. `warnings` says what vLLM
        could not unload."""
        found = _latest(job_get(request_project(request), pk))
        warnings = _call(canary.canary_stop, canary=found, user=request.user)
        found.refresh_from_db()
        body: dict[str, Any] = selectors.canary_report(found)
        if warnings:
            body["warnings"] = warnings
        return Response(body)
