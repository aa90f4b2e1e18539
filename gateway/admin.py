"""Admin: projects and members, API keys (shown once), credentials (write-only key, a "test
connection" action), aliases (every edit recorded in the alias history), price overrides."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from traces.services import retention_set

from . import services
from .forms import CredentialAdminForm, options_text
from .models import Alias, AliasChange, ApiKey, Membership, ModelPrice, Project, ProviderCredential


class MembershipInline(admin.TabularInline[Membership, Project]):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    list_display = ["slug", "name", "rpm_limit", "tpm_limit", "budget_usd", "budget_period", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    fieldsets = [
        (None, {"fields": ["slug", "name"]}),
        (
            "Limits (all keys together; empty = unlimited)",
            {"fields": ["rpm_limit", "tpm_limit", "budget_usd", "budget_period"]},
        ),
        ("Traces", {"fields": ["retention_days"]}),
    ]

    def save_model(self, request: HttpRequest, obj: Project, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "retention_days" in form.changed_data:
            retention_set(project=obj, days=obj.retention_days)  # stored traces follow the new setting


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ["name", "project", "prefix", "rpm_limit", "tpm_limit", "created_at", "revoked_at"]
    list_filter = ["project"]
    fields = ["project", "name", "rpm_limit", "tpm_limit", "prefix", "created_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name", "rpm_limit", "tpm_limit"])
            return
        key, raw = services.api_key_create(project=obj.project, name=obj.name, created_by=request.user)  # type: ignore[arg-type]
        obj.pk, obj.prefix, obj.key_hash = key.pk, key.prefix, key.key_hash
        obj.save(update_fields=["rpm_limit", "tpm_limit"])
        messages.warning(request, f"New API key (shown once, copy it now): {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(api_key=key)


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin[ProviderCredential]):
    form = CredentialAdminForm
    list_display = ["project", "provider", "label", "weight", "base_url", "options_shown", "updated_at"]
    list_filter = ["project", "provider"]
    fields = ["project", "provider", "label", "api_key", "base_url", "weight", "options"]
    actions = ["test_connection"]

    def get_readonly_fields(self, request: HttpRequest, obj: ProviderCredential | None = None) -> list[str]:
        return ["project"] if obj else []  # a credential does not move between projects

    @admin.display(description="options")
    def options_shown(self, obj: ProviderCredential) -> str:
        return options_text(obj.options)

    def save_model(self, request: HttpRequest, obj: ProviderCredential, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:  # an empty key keeps the stored one
            services.credential_update(
                credential=obj,
                provider=obj.provider,
                label=obj.label,
                base_url=obj.base_url,
                options=obj.options,
                weight=obj.weight,
                api_key=data["api_key"],
            )
            return
        cred = services.credential_set(
            project=obj.project,
            provider=obj.provider,
            api_key=data["api_key"],
            base_url=obj.base_url,
            options=obj.options,
            label=obj.label,
            weight=obj.weight,
        )
        obj.pk = cred.pk

    @admin.action(description="Test connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ProviderCredential]) -> None:
        for cred in queryset.select_related("project").order_by("project__slug", "provider", "label"):
            result = services.credential_test(credential=cred)
            status = f"HTTP {result.status}, " if result.status else ""
            level = {"ok": messages.SUCCESS, "failed": messages.WARNING}.get(result.state, messages.INFO)
            self.message_user(
                request,
                f"{cred.project} {cred.provider}:{cred.label}: {result.state} — {result.detail} "
                f"({status}{result.latency_ms:.0f} ms)",
                level=level,
            )


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin[Alias]):
    list_display = ["name", "target", "fallbacks", "retries", "project", "updated_at"]
    list_filter = ["project"]

    def get_readonly_fields(self, request: HttpRequest, obj: Alias | None = None) -> list[str]:
        # Renaming would orphan the history; create a new alias instead. A canary is a distillation
        # job's (started, promoted and stopped on its page), so it is shown here, not edited.
        canary = ["canary_target", "canary_percent"]
        return ["project", "name", *canary] if obj else canary

    def save_model(self, request: HttpRequest, obj: Alias, form: Any, change: bool) -> None:
        alias = services.alias_set(
            project=obj.project,
            name=obj.name,
            target=obj.target,
            fallbacks=list(obj.fallbacks or []),
            retries=obj.retries,
            changed_by=request.user.get_username(),
        )
        obj.pk = alias.pk

    def delete_model(self, request: HttpRequest, obj: Alias) -> None:
        services.alias_delete(project=obj.project, name=obj.name, changed_by=request.user.get_username())

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Alias]) -> None:
        for alias in queryset:
            self.delete_model(request, alias)


@admin.register(AliasChange)
class AliasChangeAdmin(admin.ModelAdmin[AliasChange]):
    list_display = ["name", "from_target", "to_target", "changed_by", "changed_at", "project"]
    list_filter = ["project", "name"]

    def has_change_permission(self, request: HttpRequest, obj: AliasChange | None = None) -> bool:
        return False  # history is append-only

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    list_display = ["model", "project", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok"]
