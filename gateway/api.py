"""REST API for aliases: GET/PUT/DELETE /api/aliases/<name>, POST /api/aliases/<name>/rollback."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .auth import actor, request_project
from .models import Alias, AliasChange


class AliasChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = AliasChange
        fields = ["from_target", "to_target", "changed_by", "changed_at"]


class AliasSerializer(serializers.ModelSerializer):
    class Meta:
        model = Alias
        fields = ["name", "target", "fallbacks", "retries", "canary_target", "canary_percent", "updated_at"]
        read_only_fields = ["canary_target", "canary_percent"]  # set by a distillation job's canary


class AliasTargetSerializer(serializers.Serializer):
    target = serializers.CharField(max_length=200)
    fallbacks = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=10)
    retries = serializers.IntegerField(required=False, min_value=0, max_value=10, allow_null=True)


def _validation_error(exc: ValidationError) -> Response:
    return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)


class AliasListApi(APIView):
    @extend_schema(
        responses=inline_serializer("AliasList", {"data": AliasSerializer(many=True)}), operation_id="aliases_list"
    )
    def get(self, request: Request) -> Response:
        project = request_project(request)
        return Response({"data": AliasSerializer(project.aliases.order_by("name"), many=True).data})


class AliasDetailApi(APIView):
    @extend_schema(responses=AliasSerializer)
    def get(self, request: Request, name: str) -> Response:
        project = request_project(request)
        alias = selectors.alias_get(project=project, name=name)
        if alias is None:
            raise NotFound(f"No alias named {name!r}.")
        history = selectors.alias_history(project=project, name=name)
        return Response({**AliasSerializer(alias).data, "history": AliasChangeSerializer(history, many=True).data})

    @extend_schema(request=AliasTargetSerializer, responses=AliasSerializer)
    def put(self, request: Request, name: str) -> Response:
        project = request_project(request)
        body = AliasTargetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            alias = services.alias_set(
                project=project,
                name=name,
                target=body.validated_data["target"],
                fallbacks=body.validated_data.get("fallbacks"),
                retries=body.validated_data.get("retries"),
                changed_by=actor(request),
            )
        except ValidationError as exc:
            return _validation_error(exc)
        return Response(AliasSerializer(alias).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, name: str) -> Response:
        project = request_project(request)
        if not services.alias_delete(project=project, name=name, changed_by=actor(request)):
            raise NotFound(f"No alias named {name!r}.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class AliasRollbackApi(APIView):
    @extend_schema(request=None, responses=AliasSerializer)
    def post(self, request: Request, name: str) -> Response:
        project = request_project(request)
        try:
            alias = services.alias_rollback(project=project, name=name, changed_by=actor(request))
        except ValidationError as exc:
            return _validation_error(exc)
        if alias is None:
            return Response({"name": name, "target": None, "deleted": True})
        return Response(AliasSerializer(alias).data)
