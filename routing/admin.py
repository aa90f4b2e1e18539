"""Admin for routing policies, their profile cells and profile runs. A policy saved here is checked
by the same service as the API and the page (routing/services.py), default flag included."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from . import services
from .models import ProfileCell, ProfileRun, RoutingPolicy


class RoutingPolicyForm(forms.ModelForm[RoutingPolicy]):
    class Meta:
        model = RoutingPolicy
        fields = ["project", *services.FIELDS]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        project = data.get("project") or getattr(self.instance, "project", None)
        if project is None or self.errors:
            return data
        probe = RoutingPolicy(pk=self.instance.pk, project=project)
        try:
            services.policy_check(policy=probe, data={f: data.get(f) for f in services.FIELDS if f in data})
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
            return data
        # The values as the service cleaned them (canonical candidate names, capabilities in order).
        return {**data, **{f: getattr(probe, f) for f in services.FIELDS if f in data}}


class ProfileCellInline(admin.TabularInline[ProfileCell, RoutingPolicy]):
    model = ProfileCell
    extra = 0
    fields = ["cluster_key", "model", "source", "errors", "samples", "updated_at"]
    readonly_fields = ["updated_at"]


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(admin.ModelAdmin[RoutingPolicy]):
    form = RoutingPolicyForm
    list_display = ["id", "name", "project", "is_default", "lam", "clustering_run", "updated_at"]
    list_filter = ["is_default", "project"]
    search_fields = ["name"]
    inlines = [ProfileCellInline]

    def save_model(self, request: HttpRequest, obj: RoutingPolicy, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user  # type: ignore[assignment]
        services.policy_save(policy=obj)


@admin.register(ProfileCell)
class ProfileCellAdmin(admin.ModelAdmin[ProfileCell]):
    list_display = ["id", "policy", "cluster_key", "model", "source", "errors", "samples", "updated_at"]
    list_filter = ["source", "policy"]
    search_fields = ["cluster_key", "model"]


@admin.register(ProfileRun)
class ProfileRunAdmin(admin.ModelAdmin[ProfileRun]):
    list_display = ["id", "policy", "status", "progress", "per_cluster", "judge", "created_at", "finished_at"]
    list_filter = ["status"]
    readonly_fields = ["estimate", "results", "started_at", "finished_at", "progress"]
