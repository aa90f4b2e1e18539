"""Admin for clustering runs, clusters (rename, flag worth distilling), datasets, rows and verdicts.
The htmx pages are where curation happens day to day; the admin is for fixing things by hand."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from .curation import CurationError, EditConflict, row_edit_response, row_set_reference, row_set_status
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


class DatasetRowForm(forms.ModelForm[DatasetRow]):
    """Carries the revision the page was opened at, so an admin edit is refused (naming who) when
    someone changed the row meanwhile, as on the curation page."""

    seen_revision = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = DatasetRow
        fields = ["status", "edited_response", "reference"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["seen_revision"].initial = self.instance.revision

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk and self.has_changed():
            current = DatasetRow.objects.select_related("version").get(pk=self.instance.pk)
            if current.version.frozen:
                raise forms.ValidationError(f"Version {current.version.number} is frozen: rows cannot change.")
            seen = data.get("seen_revision")
            if seen is not None and seen != current.revision:
                raise forms.ValidationError(str(EditConflict(current, current.edits.select_related("user").first())))
        return data


@admin.register(DatasetRow)
class DatasetRowAdmin(admin.ModelAdmin[DatasetRow]):
    """Edits go through datasets/curation.py: revision bumped, RowEdit written, frozen refused."""

    form = DatasetRowForm
    list_display = ["id", "version", "model", "status", "cost_usd", "updated_at"]
    list_filter = ["status", "version__dataset"]
    search_fields = ["response", "edited_response", "model"]
    readonly_fields = [
        "version",
        "trace_id",
        "cluster",
        "messages",
        "model",
        "cost_usd",
        "metadata",
        "response",
        "revision",
        "updated_by",
        "updated_at",
    ]
    inlines = [VerdictInline, EditInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from clusters or an import

    def save_model(self, request: HttpRequest, obj: DatasetRow, form: Any, change: bool) -> None:
        seen = form.cleaned_data.get("seen_revision")
        row = DatasetRow.objects.get(pk=obj.pk)
        try:
            for field in form.changed_data:
                if field == "status":
                    row = row_set_status(row=row, status=obj.status, user=request.user, revision=seen)
                elif field == "edited_response":
                    row = row_edit_response(
                        row=row,
                        text=obj.edited_response,
                        user=request.user,
                        revision=seen if seen is not None else row.revision,
                    )
                elif field == "reference":
                    row = row_set_reference(row=row, text=obj.reference, user=request.user, revision=seen)
                else:
                    continue
                seen = row.revision
        except CurationError as exc:  # changed between the form's check and the save
            messages.error(request, str(exc))
        obj.refresh_from_db()


@admin.register(JudgeRun)
class JudgeRunAdmin(admin.ModelAdmin[JudgeRun]):
    list_display = ["id", "version", "kind", "judge", "status", "progress", "created_at"]
    list_filter = ["status", "kind"]
