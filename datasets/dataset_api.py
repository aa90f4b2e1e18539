"""The datasets REST API: create from clusters or import JSONL, list and read, rows with filters
and cursor pages, keep/drop/edit with revisions (409 on a stale one), bulk actions on a filter,
freeze, judge runs and verdict overrides, and streamed export. Project-scoped by
gateway.auth.request_project (an API key's project, or a session's `?project=`); another project's
objects are 404."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.auth import request_project
from gateway.models import Project
from traces.export import stream

from . import export
from .curation import (
    CurationError,
    EditConflict,
    ImportFormatError,
    RowFilter,
    VersionFrozen,
    dataset_create_from_clusters,
    dataset_import_jsonl,
    open_version,
    row_edit_response,
    row_set_status,
    rows_bulk_status,
    rows_filtered,
    verdict_override,
    version_counts,
    version_freeze,
    version_get,
)
from .judge import KINDS, judge_run_cancel, judge_run_create, judge_summary
from .models import Dataset, DatasetRow, DatasetVersion, JudgeRun, Verdict
from .selectors import dataset_get

MAX_LIMIT = 500


def _conflict(exc: CurationError) -> Response:
    """409 in DRF's shape (`detail`), with who changed the row for a stale revision."""
    body: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, EditConflict):
        body.update(changed_by=exc.changed_by, changed_at=exc.changed_at, revision=exc.row.revision)
    return Response(body, status=status.HTTP_409_CONFLICT)


def _bad(exc: CurationError, field: str = "detail") -> ValidationError:
    return ValidationError({field: [str(exc)]} if field != "detail" else {"detail": str(exc)})


def _dataset(project: Project, pk: int) -> Dataset:
    dataset = dataset_get(project=project, pk=pk)
    if dataset is None:
        raise NotFound("No such dataset.")
    return dataset


def _version(request: Request, dataset: Dataset) -> DatasetVersion:
    raw = request.query_params.get("version")
    try:
        number = int(raw) if raw else None
    except ValueError:
        raise ValidationError({"version": ["Must be a version number."]}) from None
    version = version_get(dataset=dataset, number=number)
    if version is None:
        raise NotFound(f"Dataset {dataset.pk} has no version {number}.")
    return version


def version_data(version: DatasetVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "frozen": version.frozen,
        "frozen_at": version.frozen_at,
        "frozen_by": version.frozen_by.get_username() if version.frozen_by else None,
        "note": version.note,
        "counts": version_counts(version=version),
    }


def dataset_data(dataset: Dataset, *, versions: bool = False) -> dict[str, Any]:
    current = open_version(dataset=dataset)
    out: dict[str, Any] = {
        "id": dataset.pk,
        "name": dataset.name,
        "description": dataset.description,
        "created_at": dataset.created_at,
        "clusters": list(dataset.clusters.values_list("pk", flat=True)),
        "version": current.number,
        "row_count": current.rows.count(),
    }
    if versions:
        out["versions"] = [version_data(v) for v in dataset.versions.order_by("-number")]
    return out


def verdict_data(v: Verdict) -> dict[str, Any]:
    return {
        "id": v.pk,
        "judge": v.judge,
        "judge_version": v.judge_version,
        "kind": v.kind,
        "score": v.score,
        "scores": v.scores,
        "passed": v.passed,
        "reason": v.reason,
        "error": v.error,
        "override_passed": v.override_passed,
        "override_reason": v.override_reason,
        "overridden_by": v.overridden_by.get_username() if v.overridden_by else None,
        "flagged": v.flagged,
    }


def row_data(row: DatasetRow) -> dict[str, Any]:
    return {
        "id": row.pk,
        "trace_id": str(row.trace_id) if row.trace_id else None,
        "cluster_id": row.cluster_id,
        "messages": row.messages,
        "response": row.response,
        "edited_response": row.edited_response,
        "target": row.target,
        "reference": row.reference,
        "model": row.model,
        "cost_usd": row.cost_usd,
        "metadata": row.metadata,
        "status": row.status,
        "revision": row.revision,
        "updated_by": row.updated_by.get_username() if row.updated_by else None,
        "updated_at": row.updated_at,
        "verdicts": [verdict_data(v) for v in row.verdicts.all()],
    }


def judge_run_data(run: JudgeRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "dataset_id": run.version.dataset_id,
        "version": run.version.number,
        "kind": run.kind,
        "judge": run.judge,
        "judge_version": run.judge_version,
        "options": run.options,
        "status": run.status,
        "progress": run.progress,
        "message": run.message,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "summary": judge_summary(run=run),
    }


# ---------------------------------------------------------------- datasets


class CreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    clusters = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=1000)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class DatasetListApi(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="datasets_list")
    def get(self, request: Request) -> Response:
        project = request_project(request)
        return Response({"data": [dataset_data(d) for d in Dataset.objects.filter(project=project)]})

    @extend_schema(request=CreateSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        """A dataset from clusters' member traces: version 1, one pending row per trace."""
        project = request_project(request)
        body = CreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            dataset = dataset_create_from_clusters(
                project=project,
                name=body.validated_data["name"],
                clusters=body.validated_data["clusters"],
                description=body.validated_data["description"],
                user=request.user,
            )
        except CurationError as exc:
            raise _bad(exc, "clusters" if "cluster" in str(exc) else "name") from exc
        return Response(dataset_data(dataset), status=status.HTTP_201_CREATED)


class DatasetImportApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {"name": {"type": "string"}, "file": {}}}},
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        """JSON Lines (OpenAI fine-tuning lines or {prompt|messages, response, reference?, metadata?}),
        all or nothing: a bad line is a 400 naming its number."""
        project = request_project(request)
        upload = request.FILES.get("file")
        name = str(request.data.get("name") or (upload.name if upload else "")).strip()
        if upload is None:
            raise ValidationError({"file": ["Attach the JSONL file as 'file'."]})
        try:
            dataset = dataset_import_jsonl(project=project, name=name, file=upload, user=request.user)
        except ImportFormatError as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        except CurationError as exc:
            raise _bad(exc, "name" if "name" in str(exc) else "file") from exc
        return Response(dataset_data(dataset), status=status.HTTP_201_CREATED)


class DatasetDetailApi(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        return Response(dataset_data(_dataset(request_project(request), pk), versions=True))


ROW_PARAMS = [
    OpenApiParameter("version", int, description="Version number (default: the open one)."),
    OpenApiParameter("model", str),
    OpenApiParameter("status", str, enum=DatasetRow.Status.values),
    OpenApiParameter("flagged", bool, description="Rows with (true) or without (false) a failing verdict."),
    OpenApiParameter("cluster", int),
    OpenApiParameter("q", str, description="Text in the prompt or the answers."),
    OpenApiParameter("cursor", str),
    OpenApiParameter("limit", int),
]


def _filter(query: Any) -> RowFilter:
    try:
        return RowFilter.from_query(query)
    except CurationError as exc:
        name, _, message = str(exc).partition(": ")
        raise ValidationError({name: [message]}) from exc


class RowListApi(APIView):
    @extend_schema(parameters=ROW_PARAMS, responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        dataset = _dataset(request_project(request), pk)
        version = _version(request, dataset)
        rows = rows_filtered(version=version, filter=_filter(request.query_params))
        try:
            limit = int(request.query_params.get("limit", 50))
            after = int(request.query_params.get("cursor") or 0)
        except ValueError:
            raise ValidationError({"detail": "limit and cursor must be integers."}) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError({"limit": [f"Must be between 1 and {MAX_LIMIT}."]})
        page = list(
            rows.filter(pk__gt=after)
            .select_related("updated_by")
            .prefetch_related("verdicts__overridden_by")[: limit + 1]
        )
        more = len(page) > limit
        page = page[:limit]
        return Response(
            {
                "version": version_data(version),
                "data": [row_data(r) for r in page],
                "next_cursor": str(page[-1].pk) if more else None,
            }
        )


class RowPatchSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=DatasetRow.Status.choices, required=False)
    edited_response = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    revision = serializers.IntegerField(min_value=0, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "status" not in attrs and "edited_response" not in attrs:
            raise ValidationError("Give status or edited_response.")
        if "edited_response" in attrs and "revision" not in attrs:
            raise ValidationError({"revision": ["The revision you saw is required to edit the response."]})
        return attrs


def _row(project: Project, pk: int, row_id: int) -> DatasetRow:
    row = DatasetRow.objects.filter(pk=row_id, version__dataset_id=_dataset(project, pk).pk).first()
    if row is None:
        raise NotFound("No such row in this dataset.")
    return row


class RowDetailApi(APIView):
    @extend_schema(request=RowPatchSerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, pk: int, row_id: int) -> Response:
        """Keep/drop and edit the answer. An edit needs the revision you saw: 409 names who changed the row."""
        row = _row(request_project(request), pk, row_id)
        body = RowPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        revision = data.get("revision")
        try:
            if "edited_response" in data:
                row = row_edit_response(row=row, text=data["edited_response"], user=request.user, revision=revision)
                revision = row.revision if revision is not None else None
            if "status" in data:
                row = row_set_status(row=row, status=data["status"], user=request.user, revision=revision)
        except (EditConflict, VersionFrozen) as exc:
            return _conflict(exc)
        except CurationError as exc:
            raise _bad(exc) from exc
        return Response(row_data(row))


class BulkSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=DatasetRow.Status.choices)
    filter = serializers.DictField(required=False, default=dict)


class RowBulkApi(APIView):
    @extend_schema(request=BulkSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        """Set the status of every row of the open version matching `filter` (model, status,
        flagged, cluster, q), e.g. {"status": "drop", "filter": {"flagged": true}}."""
        dataset = _dataset(request_project(request), pk)
        body = BulkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row_filter = _filter(body.validated_data["filter"])
        version = open_version(dataset=dataset)
        try:
            n = rows_bulk_status(
                version=version, filter=row_filter, status=body.validated_data["status"], user=request.user
            )
        except VersionFrozen as exc:
            return _conflict(exc)
        return Response({"updated": n, "version": version_data(version)})


class FreezeApi(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        """Freeze the open version (pin it for distillation); the next version opens with copies of its rows."""
        dataset = _dataset(request_project(request), pk)
        version = open_version(dataset=dataset)
        try:
            nxt = version_freeze(version=version, user=request.user, note=str(request.data.get("note") or ""))
        except VersionFrozen as exc:
            return _conflict(exc)
        version.refresh_from_db()
        return Response({"frozen": version_data(version), "open": version_data(nxt)})


class JudgeSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KINDS)
    alias = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    options = serializers.DictField(required=False, default=dict)


class JudgeStartApi(APIView):
    @extend_schema(request=JudgeSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: int) -> Response:
        """Judge the open version's rows (or `?version=N`): an LLM judge through an alias
        (pointwise, pairwise) or a check (json, json_schema, regex, exact). Runs in the background."""
        dataset = _dataset(request_project(request), pk)
        version = _version(request, dataset)
        body = JudgeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            run = judge_run_create(
                version=version, kind=data["kind"], alias=data["alias"], options=data["options"], user=request.user
            )
        except CurationError as exc:
            raise ValidationError({"options": [str(exc)]}) from exc
        return Response(judge_run_data(run), status=status.HTTP_202_ACCEPTED)


class JudgeRunApi(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        project = request_project(request)
        run = JudgeRun.objects.select_related("version").filter(pk=pk, version__dataset__project=project).first()
        if run is None:
            raise NotFound("No such judge run.")
        return Response(judge_run_data(run))


class JudgeRunCancelApi(APIView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        """Ask a queued or running judge run to stop (it stops within a few rows; verdicts so far stay)."""
        project = request_project(request)
        run = JudgeRun.objects.select_related("version").filter(pk=pk, version__dataset__project=project).first()
        if run is None:
            raise NotFound("No such judge run.")
        return Response(judge_run_data(judge_run_cancel(run=run)))


class OverrideSerializer(serializers.Serializer):
    passed = serializers.BooleanField(allow_null=True)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class VerdictOverrideApi(APIView):
    @extend_schema(request=OverrideSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        """A person's pass/fail over the judge's (null removes the override)."""
        project = request_project(request)
        verdict = Verdict.objects.filter(pk=pk, row__version__dataset__project=project).first()
        if verdict is None:
            raise NotFound("No such verdict.")
        body = OverrideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            verdict = verdict_override(
                verdict=verdict,
                passed=body.validated_data["passed"],
                reason=body.validated_data["reason"],
                user=request.user,
            )
        except VersionFrozen as exc:
            return _conflict(exc)
        return Response(verdict_data(verdict))


class ExportApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=list(export.FORMATS)),
            OpenApiParameter("version", int),
            OpenApiParameter("status", str, enum=list(export.STATUSES), description="Default keep."),
        ],
        responses={(200, "*/*"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, pk: int) -> StreamingHttpResponse:
        """The kept rows of a version (default the open one) as OpenAI fine-tuning JSONL, JSONL or
        Parquet; `status=all` for every row not dropped."""
        dataset = _dataset(request_project(request), pk)
        kind = request.query_params.get("format", "openai")
        if kind not in export.FORMATS:
            raise ValidationError({"format": [f"Use one of {', '.join(export.FORMATS)}."]})
        which = request.query_params.get("status", "keep")
        if which not in export.STATUSES:
            raise ValidationError({"status": [f"Use one of {', '.join(export.STATUSES)}."]})
        version = _version(request, dataset)
        rows = export.export_rows(version=version, status=which)
        content_type, extension = export.FORMATS[kind]
        response = StreamingHttpResponse(stream(export.WRITERS[kind](rows)), content_type=content_type)
        suffix = "-openai" if kind == "openai" else ""
        name = f"dataset-{dataset.pk}-v{version.number}{suffix}.{extension}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
