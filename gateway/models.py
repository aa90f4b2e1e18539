"""Tenancy and gateway configuration: projects, members, API keys, credentials, aliases, prices."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from traces.ch_sql import DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS


def validate_base_url(value: str) -> None:
    # Not URLValidator: it refuses single-label hosts, and self-hosted servers live at http://vllm:8000.
    if value and not value.startswith(("http://", "https://")):
        raise ValidationError("Enter an http:// or https:// URL.")


class Project(models.Model):
    """The tenant boundary: every key, alias, credential and trace belongs to one project."""

    class BudgetPeriod(models.TextChoices):
        DAY = "day"
        MONTH = "month"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # Limits over all of the project's keys; empty means unlimited.
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, verbose_name="requests per minute")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, verbose_name="tokens per minute")
    budget_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Spend limit per budget period, in USD."
    )
    budget_period = models.CharField(max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    # Applied in ClickHouse: each trace row carries it and the table's TTL drops rows past it.
    retention_days = models.PositiveSmallIntegerField(
        default=DEFAULT_RETENTION_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)],
        help_text="How long traces are kept, in days.",
    )

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class ApiKey(models.Model):
    """An engine key (`ot-...`). Only its SHA-256 is stored; the key is shown once at creation."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise the key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, verbose_name="requests per minute")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, verbose_name="tokens per minute")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


def provider_choices() -> list[tuple[str, str]]:
    from .providers import PROVIDERS

    return [(name, name) for name in sorted(PROVIDERS)]


class ProviderCredential(models.Model):
    """A provider key stored per project, encrypted at rest; it wins over the environment's.
    Several credentials of one provider (labels) are load-balanced by weight."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="credentials")
    provider = models.CharField(max_length=32, choices=provider_choices)
    label = models.SlugField(max_length=50, default="default", help_text="Tells several keys of one provider apart.")
    weight = models.PositiveIntegerField(default=1, help_text="Share of traffic among this provider's credentials.")
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text='Provider settings, e.g. {"api_version": "2024-10-21"} (Azure) or {"region": "us-east-1", '
        '"access_key_id": "AKIA..."} (Bedrock).',
    )
    api_key_encrypted = models.TextField(editable=False)
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="Leave empty for the provider's default. Internal hosts are fine: http://vllm:8000/v1.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "provider", "label"], name="unique_credential")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.label} credential of {self.project}"


class Alias(models.Model):
    """A model name the engine resolves, e.g. `smart` → `openai/gpt-4o`."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=100)
    target = models.CharField(max_length=200, help_text="provider/model")
    fallbacks = models.JSONField(
        default=list, blank=True, help_text='Tried in order when the target fails: ["anthropic/claude-sonnet-4-5"].'
    )
    retries = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Retries per target on transient failures; empty for the engine default."
    )
    # A canary: this share of the alias's requests goes to canary_target first (the target stays
    # its fallback), so a new model meets live traffic before it takes all of it.
    canary_target = models.CharField(max_length=200, blank=True, help_text="provider/model tried on a canary share.")
    canary_percent = models.PositiveSmallIntegerField(default=0, help_text="Share of requests (0-100) to the canary.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_alias")]
        verbose_name_plural = "aliases"

    def __str__(self) -> str:
        return f"{self.name} → {self.target}"


class AliasChange(models.Model):
    """One entry of an alias's history. `to_target` is empty when the alias was deleted."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alias_changes")
    name = models.CharField(max_length=100)
    from_target = models.CharField(max_length=200, blank=True)
    to_target = models.CharField(max_length=200, blank=True)
    changed_by = models.CharField(max_length=200)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["project", "name", "-changed_at"])]

    def __str__(self) -> str:
        return f"{self.name}: {self.from_target or '∅'} → {self.to_target or '∅'}"


class ModelPrice(models.Model):
    """A price override (USD per million tokens) for a model; project-wide when project is set."""

    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE)
    model = models.CharField(max_length=200, help_text="provider/model")
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "model"], name="unique_model_price")]

    def __str__(self) -> str:
        return f"{self.model}: ${self.input_per_mtok}/${self.output_per_mtok} per MTok"
