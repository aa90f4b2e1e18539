"""The clustering REST API, scoped to the caller's project (an engine key's project, or a member's
session with `?project=<slug>`): start, read and cancel runs; page through a cluster's member
traces; rename, flag, merge and split clusters. Another project's run or cluster is 404."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.auth import KeyPrincipal, request_project
from gateway.models import Project

from . import cluster_edits, runs
from .models import Cluster, ClusteringRun
from .selectors import cluster_get, cluster_member_ids, run_get

MAX_LIMIT = 1000


def drf_error(exc: DjangoValidationError) -> ValidationError:
    """A service's ValidationError in DRF's 400 shape (field → [messages], or a list of messages)."""
    if hasattr(exc, "error_dict"):
        return ValidationError(exc.message_dict)
    return ValidationError({"detail": exc.messages})


def cluster_data(c: Cluster) -> dict[str, Any]:
    return {
        "id": c.pk,
        "identity": str(c.identity),
        "name": c.name,
        "description": c.description,
        "name_source": c.name_source,
        "size": c.size,
        "keywords": c.keywords,
        "cost_usd": c.cost_usd,
        "error_rate": c.error_rate,
        "status": c.status,
        "worth_distilling": c.worth_distilling,
        "merged_into": c.merged_into_id,
        "parent": c.parent_id,
    }


def cluster_detail_data(c: Cluster) -> dict[str, Any]:
    return {
        **cluster_data(c),
        "run": c.run_id,
        "representatives": c.representatives,
        "models_served": c.models_served,
        "cohesion": c.cohesion,
        "separation": c.separation,
    }


def run_data(run: ClusteringRun, *, with_clusters: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.pk,
        "status": run.status,
        "phase": run.phase,
        "progress": run.progress,
        "message": run.message,
        "filters": run.filters,
        "params": run.params,
        "trace_count": run.trace_count,
        "noise_count": run.noise_count,
        "cluster_count": run.cluster_count,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "assigned_until": run.assigned_until.isoformat() if run.assigned_until else None,
    }
    if with_clusters:
        data["clusters"] = [cluster_data(c) for c in Cluster.objects.filter(run=run)]
    return data


def _run(project: Project, pk: int) -> ClusteringRun:
    run = run_get(project=project, pk=pk)
    if run is None:
        raise NotFound("No such clustering run.")
    return run


def _cluster(project: Project, pk: int) -> Cluster:
    cluster = cluster_get(project=project, pk=pk)
    if cluster is None:
        raise NotFound("No such cluster.")
    return cluster


RUN = inline_serializer(
    "ClusteringRun",
    {
        "id": serializers.IntegerField(),
        "status": serializers.ChoiceField(ClusteringRun.Status.choices),
        "phase": serializers.CharField(),
        "progress": serializers.FloatField(),
        "message": serializers.CharField(),
        "trace_count": serializers.IntegerField(),
        "noise_count": serializers.IntegerField(),
        "cluster_count": serializers.IntegerField(),
        "clusters": serializers.ListField(child=serializers.DictField()),
    },
)
CLUSTER = inline_serializer("Cluster", {"id": serializers.IntegerField(), "name": serializers.CharField()})


class RunCreateSerializer(serializers.Serializer):
    filters = serializers.DictField(
        required=False,
        help_text="The traces API's query parameters (range, since, until, model, alias, provider, status, tag, "
        "metadata, q…); may also be given at the top level of the body. No time bound: all time, newest traces first.",
    )
    params = serializers.DictField(
        required=False,
        help_text="reduction (umap, pca, none), min_cluster_size, prompt_fields (last_user, system+last_user, "
        "all_user), namer (an alias; empty for keyword names), max_traces. The run records embedding_model (the "
        "packaged MiniLM: its space) and grouping_model (OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR, or empty).",
    )


class RunListApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="clustering_runs_list")
    def get(self, request: Request) -> Response:
        project = request_project(request)
        recent = ClusteringRun.objects.filter(project=project)[:50]
        return Response({"data": [run_data(r, with_clusters=False) for r in recent]})

    @extend_schema(request=RunCreateSerializer, responses={201: RUN}, operation_id="clustering_runs_create")
    def post(self, request: Request) -> Response:
        """Start clustering the project's traces: 201 with the queued run; poll it for progress."""
        project = request_project(request)
        if not isinstance(request.data, dict):
            raise ValidationError({"detail": ["Send a JSON object."]})
        body = dict(request.data)
        params = body.pop("params", None) or {}
        filters = body.pop("filters", None)
        if filters is None:
            filters = body
        elif body:
            raise ValidationError({"filters": ["Give filters either under 'filters' or at the top level, not both."]})
        if not isinstance(filters, dict) or not isinstance(params, dict):
            raise ValidationError({"detail": ["'filters' and 'params' must be JSON objects."]})
        user = None if isinstance(request.user, KeyPrincipal) else request.user
        try:
            run = runs.run_create(project=project, user=user, filters=filters, params=params)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(run_data(run), status=201)


class RunDetailApi(APIView):
    @extend_schema(responses=RUN, operation_id="clustering_runs_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(run_data(_run(request_project(request), pk)))


class RunCancelApi(APIView):
    @extend_schema(request=None, responses=RUN)
    def post(self, request: Request, pk: int) -> Response:
        """A queued run is cancelled at once, a running one at its next phase or embedding batch."""
        run = _run(request_project(request), pk)
        try:
            run = runs.run_cancel(run=run)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(run_data(run))


class ClusterPatchSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200)
    description = serializers.CharField(required=False, max_length=500, allow_blank=True)
    worth_distilling = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise ValidationError("Give name, description or worth_distilling.")
        return attrs


class ClusterDetailApi(APIView):
    @extend_schema(responses=CLUSTER, operation_id="clusters_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(cluster_detail_data(_cluster(request_project(request), pk)))

    @extend_schema(request=ClusterPatchSerializer, responses=CLUSTER)
    def patch(self, request: Request, pk: int) -> Response:
        """Rename (the name is then a person's, kept across re-runs) or flag as worth distilling."""
        cluster = _cluster(request_project(request), pk)
        body = ClusterPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            if "name" in data or "description" in data:
                name = data.get("name", cluster.name)
                cluster_edits.cluster_rename(cluster=cluster, name=name, description=data.get("description"))
            if "worth_distilling" in data:
                cluster_edits.cluster_flag(cluster=cluster, worth_distilling=data["worth_distilling"])
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(cluster_detail_data(cluster))


class ClusterTracesApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
            OpenApiParameter("limit", int, description=f"1 to {MAX_LIMIT} (default 100)"),
        ],
        responses=inline_serializer(
            "ClusterTraces",
            {"data": serializers.ListField(child=serializers.UUIDField()), "next_cursor": serializers.CharField()},
        ),
    )
    def get(self, request: Request, pk: int) -> Response:
        """Member trace ids in trace id order (a merged cluster's members included)."""
        cluster = _cluster(request_project(request), pk)
        try:
            limit = int(request.query_params.get("limit", 100))
        except ValueError:
            raise ValidationError({"limit": ["Must be an integer."]}) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError({"limit": [f"Must be between 1 and {MAX_LIMIT}."]})
        cursor = request.query_params.get("cursor") or None
        if cursor is not None:
            try:
                cursor = str(uuid.UUID(cursor))
            except ValueError:
                raise ValidationError({"cursor": ["Invalid cursor."]}) from None
        ids = cluster_member_ids(cluster=cluster, after=cursor, limit=limit + 1)
        more = len(ids) > limit
        ids = ids[:limit]
        return Response({"data": ids, "next_cursor": ids[-1] if more else None})


class MergeSerializer(serializers.Serializer):
    other = serializers.IntegerField(help_text="The cluster merged into this one.")


class ClusterMergeApi(APIView):
    @extend_schema(request=MergeSerializer, responses=CLUSTER)
    def post(self, request: Request, pk: int) -> Response:
        """`other`'s members count toward this cluster from now on."""
        project = request_project(request)
        into = _cluster(project, pk)
        body = MergeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        other = cluster_get(project=project, pk=body.validated_data["other"])
        if other is None:
            raise NotFound("No such cluster (other).")
        try:
            into = cluster_edits.cluster_merge(into=into, other=other)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(cluster_detail_data(into))


class ClusterSplitApi(APIView):
    @extend_schema(
        request=None,
        responses=inline_serializer("ClusterSplit", {"children": serializers.ListField(child=serializers.DictField())}),
    )
    def post(self, request: Request, pk: int) -> Response:
        """Re-cluster the members; 201 with the child clusters, 400 when it does not split in two."""
        cluster = _cluster(request_project(request), pk)
        try:
            children = cluster_edits.cluster_split(cluster=cluster)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response({"children": [cluster_data(c) for c in children]}, status=201)
