"""The routing REST API, scoped to the caller's project (an engine key's project, or a member's
session with `?project=<slug>`): policies (list, create, read with profile, curve, traffic and
savings, change, delete) and profile runs (create with the estimate first, read, start, cancel).
Another project's policy or run is 404."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.api import drf_error
from gateway.auth import request_project

from . import profile_runs, selectors, services
from .capabilities import CAPABILITIES
from .models import ProfileRun


def _object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationError({"detail": ["The body must be a JSON object."]})
    return dict(request.data.items())


class PolicyBody(serializers.Serializer):
    """For the schema: the service checks every value (services.py), with the messages people see."""

    name = serializers.SlugField(help_text="Unique in the project; an alias targets it as `router/<name>`.")
    candidates = serializers.ListField(child=serializers.CharField(), help_text="1 to 20 provider/model names.")
    is_default = serializers.BooleanField(required=False, help_text='The policy `model="auto"` uses.')
    lam = serializers.FloatField(required=False, help_text="λ ≥ 0: 0 = best quality, larger = cheaper.")
    clustering_run = serializers.IntegerField(required=False, allow_null=True, help_text="A done run's id.")
    default_model = serializers.CharField(required=False, allow_blank=True, help_text="A candidate.")
    max_latency_ms = serializers.IntegerField(required=False, allow_null=True)
    required_capabilities = serializers.ListField(child=serializers.ChoiceField(CAPABILITIES), required=False)
    min_context_tokens = serializers.IntegerField(required=False, allow_null=True)
    temperature = serializers.FloatField(required=False, help_text="> 0: soft assignment to clusters.")
    shrinkage = serializers.FloatField(required=False, help_text="≥ 0: pseudo-samples for sparse cells.")
    expected_output_tokens = serializers.IntegerField(required=False)


POLICY = inline_serializer(
    "RoutingPolicyDetail",
    {
        "id": serializers.IntegerField(),
        "name": serializers.CharField(),
        "candidates": serializers.ListField(child=serializers.CharField()),
        "lam": serializers.FloatField(),
        "profile": serializers.DictField(help_text="{models, rows: [{key, name, cells: {model: cell}}]}"),
        "curve": serializers.DictField(help_text="{points: [{lam, error, cost_usd, shares}], baseline, current}"),
        "traffic": serializers.DictField(help_text="{t: [epoch s], series: {model: [requests]}}"),
        "savings": serializers.DictField(help_text="{actual_usd, dearest_usd, saved_usd, saved_fraction}"),
        "profile_runs": serializers.ListField(child=serializers.DictField()),
    },
)


class PolicyListApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="routing_policies_list")
    def get(self, request: Request) -> Response:
        project = request_project(request)
        return Response({"data": [selectors.policy_data(p) for p in selectors.policies(project)]})

    @extend_schema(request=PolicyBody, responses={201: POLICY}, operation_id="routing_policies_create")
    def post(self, request: Request) -> Response:
        project = request_project(request)
        try:
            policy = services.policy_create(project=project, user=request.user, data=_object(request))
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(selectors.policy_detail(policy), status=201)


class PolicyDetailApi(APIView):
    @extend_schema(responses={200: POLICY}, operation_id="routing_policies_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(selectors.policy_detail(selectors.policy_get(request_project(request), pk)))

    @extend_schema(request=PolicyBody(partial=True), responses={200: POLICY}, operation_id="routing_policies_update")
    def patch(self, request: Request, pk: int) -> Response:
        policy = selectors.policy_get(request_project(request), pk)
        try:
            policy = services.policy_update(policy=policy, data=_object(request))
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(selectors.policy_detail(policy))

    @extend_schema(responses={204: None, 400: None}, operation_id="routing_policies_destroy")
    def delete(self, request: Request, pk: int) -> Response:
        try:
            services.policy_delete(policy=selectors.policy_get(request_project(request), pk))
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(status=204)


class ProfileRunBody(serializers.Serializer):
    per_cluster = serializers.IntegerField(required=False, default=10, help_text="Prompts replayed per cluster.")
    judge = serializers.CharField(help_text="The judge: an alias or model of the project, called through the engine.")
    start = serializers.BooleanField(required=False, default=True, help_text="false: a draft with the estimate only.")


RUN = inline_serializer(
    "ProfileRun",
    {
        "id": serializers.IntegerField(),
        # A plain string: a second `status` enum would collide with the other apps' in the schema.
        "status": serializers.CharField(help_text=" | ".join(ProfileRun.Status.values)),
        "progress": serializers.FloatField(),
        "estimate": serializers.DictField(help_text="{calls, cost_usd, prompts}"),
        "results": serializers.DictField(),
    },
)


class PolicyProfileApi(APIView):
    @extend_schema(request=ProfileRunBody, responses={201: RUN}, operation_id="routing_policies_profile")
    def post(self, request: Request, pk: int) -> Response:
        """Start a profile run (or, with `"start": false`, a draft that only carries the estimate):
        replay a sample of each cluster's prompts to every candidate and judge the answers."""
        policy = selectors.policy_get(request_project(request), pk)
        body = ProfileRunBody(data=_object(request))
        body.is_valid(raise_exception=True)
        data = body.validated_data
        user = request.user if getattr(request.user, "pk", None) else None
        try:
            run = profile_runs.profile_run_create(
                policy=policy, user=user, per_cluster=data["per_cluster"], judge=data["judge"], start=data["start"]
            )
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(selectors.run_data(run), status=201)


class ProfileRunDetailApi(APIView):
    @extend_schema(responses={200: RUN}, operation_id="routing_profile_runs_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(selectors.run_data(selectors.profile_run_get(request_project(request), pk)))


class ProfileRunStartApi(APIView):
    @extend_schema(request=None, responses={200: RUN}, operation_id="routing_profile_runs_start")
    def post(self, request: Request, pk: int) -> Response:
        run = selectors.profile_run_get(request_project(request), pk)
        try:
            run = profile_runs.profile_run_start(run=run)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(selectors.run_data(run))


class ProfileRunCancelApi(APIView):
    @extend_schema(request=None, responses={200: RUN}, operation_id="routing_profile_runs_cancel")
    def post(self, request: Request, pk: int) -> Response:
        run = selectors.profile_run_get(request_project(request), pk)
        try:
            run = profile_runs.profile_run_cancel(run=run)
        except DjangoValidationError as exc:
            raise drf_error(exc) from exc
        return Response(selectors.run_data(run))
