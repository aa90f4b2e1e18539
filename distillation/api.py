"""The distillation REST API, scoped to the caller's project (an engine key's project, or a
member's session with `?project=<slug>`): create a job (its estimate first: `?dry_run=1` or
`"start": false`), read its progress, metrics and evaluation, cancel, start again, approve (re-point
an alias at the trained student, served in-process or by vLLM), roll back, and export the adapter or
the merged model as a zip. Another project's job is 404."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.api import drf_error
from datasets.models import DatasetVersion
from gateway.auth import request_project
from gateway.models import Project
from traces.export import stream

from . import approval, export, services
from .models import DistillationJob
from .students import DEFAULT_STUDENT


def job_data(job: DistillationJob, *, full: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.pk,
        "status": job.status,
        "phase": job.phase,
        "progress": job.progress,
        "message": job.message,
        "dataset": job.dataset_version.dataset_id,
        "dataset_version": job.dataset_version_id,
        "version_number": job.dataset_version.number,
        "teacher": job.teacher,
        "student": job.student,
        "n": job.n,
        "judge": {"kind": job.judge_kind, "alias": job.judge_alias, "options": job.judge_options},
        "settings": job.settings,
        "held_out_fraction": job.held_out_fraction,
        "estimate": job.estimate,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if full:
        data["split"] = {k: len(v) for k, v in (job.split or {}).items()}
        data["metrics"] = job.metrics
        data["evaluation"] = job.evaluation
        data["adapter_path"] = job.adapter_path
        data["students"] = [
            {
                "name": s.name,
                "version": s.version,
                "alias": s.alias,
                "model": s.model,
                "serving": s.serving,
                "created_at": s.created_at.isoformat(),
                "approved_at": s.approved_at.isoformat() if s.approved_at else None,
            }
            for s in job.students.all()
        ]
    return data


def job_get(project: Project, pk: int) -> DistillationJob:
    job = DistillationJob.objects.select_related("dataset_version").filter(project=project, pk=pk).first()
    if job is None:
        raise NotFound("No such distillation job.")
    return job


JOB = inline_serializer(
    "DistillationJob",
    {
        "id": serializers.IntegerField(),
        "status": serializers.ChoiceField(DistillationJob.Status.choices),
        "phase": serializers.CharField(),
        "progress": serializers.FloatField(),
        "message": serializers.CharField(),
        "estimate": serializers.DictField(),
        "metrics": serializers.DictField(),
        "evaluation": serializers.DictField(),
    },
)


class JobCreateSerializer(serializers.Serializer):
    dataset_version = serializers.IntegerField(required=False, help_text="A frozen dataset version's id.")
    dataset = serializers.IntegerField(required=False, help_text="With `version`: a dataset's id.")
    version = serializers.IntegerField(required=False, help_text="With `dataset`: the version number.")
    teacher = serializers.CharField(help_text="A model (provider/model) or an alias of the project.")
    student = serializers.CharField(required=False, default=DEFAULT_STUDENT)
    n = serializers.JSONField(required=False, help_text="Teacher samples per prompt (≥ 2).")
    judge = serializers.JSONField(
        required=False, help_text='{"kind": "pointwise"|"exact"|"json"|"json_schema"|"regex", "alias", "options"}'
    )
    settings = serializers.JSONField(required=False, help_text="Trainer settings: mode, beta, steps, batch_size, lr…")
    held_out_fraction = serializers.JSONField(required=False)
    start = serializers.BooleanField(required=False, default=True, help_text="false: a draft with the estimate only.")


def _version(project: Project, data: dict[str, Any]) -> DatasetVersion:
    versions = DatasetVersion.objects.select_related("dataset").filter(dataset__project=project)
    if data.get("dataset_version") is not None:
        version = versions.filter(pk=data["dataset_version"]).first()
    elif data.get("dataset") is not None and data.get("version") is not None:
        version = versions.filter(dataset_id=data["dataset"], number=data["version"]).first()
    else:
        raise ValidationError({"dataset_version": ["Give dataset_version (an id), or dataset and version."]})
    if version is None:
        raise ValidationError({"dataset_version": ["No such dataset version in this project."]})
    return version


class JobListApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="distillation_jobs_list")
    def get(self, request: Request) -> Response:
        project = request_project(request)
        recent = DistillationJob.objects.filter(project=project).select_related("dataset_version")[:50]
        return Response({"data": [job_data(j, full=False) for j in recent]})

    @extend_schema(request=JobCreateSerializer, responses={201: JOB, 200: OpenApiTypes.OBJECT},
                   operation_id="distillation_jobs_create")  # fmt: skip
    def post(self, request: Request) -> Response:
        """Create a job: 201 with its id and estimate (queued, or a draft with `"start": false`).
        `?dry_run=1` answers 200 with the estimate only and stores nothing."""
        project = request_project(request)
        body = JobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        dry_run = request.query_params.get("dry_run") in ("1", "true", "yes")
        version = _version(project, data)
        try:
            with transaction.atomic():
                job = services.job_create(
                    project=project,
                    dataset_version=version,
                    teacher=data["teacher"],
                    student=data["student"],
                    n=data.get("n", services.DEFAULT_N),
                    judge=_judge(data.get("judge")),
                    settings=data.get("settings") if data.get("settings") is not None else {},
                    held_out_fraction=data.get("held_out_fraction", 0.2),
                    user=request.user,
                    start=data["start"] and not dry_run,
                )
                if dry_run:
                    estimate = job.estimate
                    transaction.set_rollback(True)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        if dry_run:
            return Response({"dry_run": True, "estimate": estimate})
        return Response(job_data(job), status=201)


def _judge(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise ValidationError({"judge": ['An object: {"kind": ..., "alias": ..., "options": {...}}.']})


class JobDetailApi(APIView):
    @extend_schema(responses={200: JOB}, operation_id="distillation_jobs_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(job_data(job_get(request_project(request), pk)))


class JobCancelApi(APIView):
    @extend_schema(request=None, responses={200: JOB}, operation_id="distillation_jobs_cancel")
    def post(self, request: Request, pk: int) -> Response:
        """A queued job stops at once; a running one at its next check."""
        job = job_get(request_project(request), pk)
        try:
            job = services.job_cancel(job=job)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(job_data(job))


class JobStartApi(APIView):
    @extend_schema(request=None, responses={200: JOB}, operation_id="distillation_jobs_start")
    def post(self, request: Request, pk: int) -> Response:
        """Start a draft, or resume a failed or cancelled job (what it already has is kept)."""
        job = job_get(request_project(request), pk)
        try:
            job = services.job_start(job=job)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(job_data(job))


class ApproveSerializer(serializers.Serializer):
    alias = serializers.CharField(max_length=100, help_text="The alias to point at the student.")
    serve = serializers.ChoiceField(
        choices=approval.SERVING,
        required=False,
        help_text="How to serve it: `local` (in-process) or `vllm` (the project's vLLM server); "
        "default OPENTRACY_STUDENT_SERVING.",
    )


class JobApproveApi(APIView):
    @extend_schema(request=ApproveSerializer, responses={200: OpenApiTypes.OBJECT},
                   operation_id="distillation_jobs_approve")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Register the trained student (`<base>-v<n>`) and re-point the alias at `<serve>/<name>`.
        502 when vLLM refused or could not be reached (nothing changed)."""
        job = job_get(request_project(request), pk)
        body = ApproveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            student = services.job_approve(job=job, alias=data["alias"], user=request.user, serve=data.get("serve"))
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        except approval.ServingFailed as exc:
            return Response({"detail": str(exc)}, status=502)
        return Response(
            {"student": student.name, "alias": student.alias, "target": student.model, "serving": student.serving}
        )


class JobRollbackApi(APIView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT}, operation_id="distillation_jobs_rollback")
    def post(self, request: Request, pk: int) -> Response:
        """Point the approved alias back at what it served before the approval (and unload a vLLM
        student's adapter, best effort: `warnings` says what could not be unloaded)."""
        job = job_get(request_project(request), pk)
        try:
            done = services.job_rollback_report(job=job, user=request.user)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        student = approval.latest_approved(job)
        body: dict[str, Any] = {"alias": student.alias if student else "", "target": done.target}
        if done.warnings:
            body["warnings"] = done.warnings
        return Response(body)


class JobExportApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("kind", str, enum=list(export.KINDS), description="adapter or merged")],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        operation_id="distillation_jobs_export",
    )
    def get(self, request: Request, pk: int) -> StreamingHttpResponse:
        """The trained adapter (adapter_model.safetensors + adapter_config.json) or the merged model
        (config.json, model.safetensors, tokenizer files) as a zip, streamed."""
        job = job_get(request_project(request), pk)
        kind = request.query_params.get("kind", "adapter")
        try:
            folder = export.export_folder(job=job, kind=kind)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        # An async iterator: under ASGI Django would read a sync one whole into memory first.
        response = StreamingHttpResponse(stream(export.zip_stream(folder)), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{export.zip_name(job, kind)}"'
        return response
