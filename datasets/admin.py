"""Admin for clustering runs, clusters (rename, flag worth distilling), datasets, rows and verdicts.
The htmx pages are where curation happens day to day; the admin is for fixing things by hand."""

from __future__ import annotations

from django.contrib import admin

from .models import Cluster, ClusteringRun, Dataset, DatasetRow, DatasetVersion, JudgeRun, RowEdit, Verdict


@admin.register(ClusteringRun)
class ClusteringRunAdmin(admin.ModelAdmin[ClusteringRun]):
    list_display = ["id", "project", "status", "phase", "progress", "trace_count", "cluster_count", "created_at"]
    list_filter = ["status", "project"]
    readonly_fields = ["started_at", "finished_at", "trace_count", "noise_count", "cluster_count", "assigned_until"]


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin[Cluster]):
    list_display = ["id", "name", "project", "run", "size", "cost_usd", "error_rate", "status", "worth_distilling"]
    list_filter = ["status", "worth_distilling", "name_source", "project"]
    list_editable = ["worth_distilling"]
    search_fields = ["name", "description"]
    exclude = ["centroid"]
    readonly_fields = ["identity", "size", "keywords", "representatives", "cohesion", "separation", "models_served"]


class VersionInline(admin.TabularInline[DatasetVersion, Dataset]):
    model = DatasetVersion
    extra = 0
    readonly_fields = ["number", "frozen_at", "frozen_by", "created_at"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin[Dataset]):
    list_display = ["id", "name", "project", "created_at"]
    list_filter = ["project"]
    search_fields = ["name"]
    inlines = [VersionInline]
    filter_horizontal = ["clusters"]


class VerdictInline(admin.TabularInline[Verdict, DatasetRow]):
    model = Verdict
    extra = 0
    fields = ["judge", "judge_version", "kind", "score", "passed", "reason", "override_passed", "override_reason"]
    readonly_fields = ["judge", "judge_version", "kind", "score", "passed", "reason"]


class EditInline(admin.TabularInline[RowEdit, DatasetRow]):
    model = RowEdit
    extra = 0
    readonly_fields = ["user", "field", "old", "new", "created_at"]


@admin.register(DatasetRow)
class DatasetRowAdmin(admin.ModelAdmin[DatasetRow]):
    list_display = ["id", "version", "model", "status", "cost_usd", "updated_at"]
    list_filter = ["status", "version__dataset"]
    search_fields = ["response", "edited_response", "model"]
    readonly_fields = ["trace_id", "response", "revision", "updated_by", "updated_at"]
    inlines = [VerdictInline, EditInline]


@admin.register(JudgeRun)
class JudgeRunAdmin(admin.ModelAdmin[JudgeRun]):
    list_display = ["id", "version", "kind", "judge", "status", "progress", "created_at"]
    list_filter = ["status", "kind"]
