"""What people edit about routing (DESIGN.md "Where data lives"): policies, the error profile's
cells and profile runs. Per-request decisions are facts and live on the trace in ClickHouse."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from datasets.models import ClusteringRun
from gateway.models import Project


class RoutingPolicy(models.Model):
    """Candidates, the cluster set and λ: per prompt, pick argmin predicted error + λ·cost."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="routing_policies")
    name = models.SlugField(max_length=100, help_text="An alias targets it as `router/<name>`.")
    is_default = models.BooleanField(default=False, help_text='The policy `model="auto"` uses.')
    candidates = models.JSONField(default=list, help_text='["openai/gpt-4o", "openai/gpt-4o-mini", ...]')
    lam = models.FloatField(
        default=0.1, help_text="λ: error accepted per unit of normalised cost (0 = best, large = cheapest)."
    )
    clustering_run = models.ForeignKey(
        ClusteringRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The cluster set; empty: the shipped prior clusters.",
    )
    default_model = models.CharField(
        max_length=200, blank=True, help_text="Answers when the profile has no data for any candidate."
    )
    max_latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Skip slower candidates (p50).")
    required_capabilities = models.JSONField(default=list, blank=True, help_text='e.g. ["tools", "json_schema"]')
    min_context_tokens = models.PositiveIntegerField(null=True, blank=True)
    temperature = models.FloatField(default=0.05, help_text="Soft assignment to clusters: softmax(cos / T).")
    shrinkage = models.FloatField(default=8.0, help_text="Pseudo-samples pulling a sparse cell to its anchor.")
    expected_output_tokens = models.PositiveIntegerField(default=200, help_text="For the cost of a request.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="routing_policy_unique_name")]
        verbose_name_plural = "routing policies"

    def __str__(self) -> str:
        return self.name


class ProfileCell(models.Model):
    """Evidence for one cluster × model from one source: `errors` out of `samples` judged answers.
    Ψ (routing/profile.py) sums the sources and shrinks sparse cells."""

    class Source(models.TextChoices):
        TRACES = "traces"  # judge and human verdicts, provider errors (recomputed by the learner)
        PROFILE_RUN = "profile_run"  # replayed prompts, judged
        STUDENT_EVAL = "student_eval"  # a distilled student's held-out evaluation

    policy = models.ForeignKey(RoutingPolicy, on_delete=models.CASCADE, related_name="cells")
    cluster_key = models.CharField(max_length=64, help_text="A shipped cluster (`prior:code`) or a Cluster identity.")
    model = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=Source.choices)
    errors = models.FloatField(default=0.0)
    samples = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["policy", "cluster_key", "model", "source"], name="profile_cell_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model} on {self.cluster_key}: {self.errors:g}/{self.samples} ({self.source})"


class ProfileRun(models.Model):
    """Replaying a sample of each cluster's prompts to every candidate and judging the answers."""

    class Status(models.TextChoices):
        DRAFT = "draft"  # only the cost estimate
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    policy = models.ForeignKey(RoutingPolicy, on_delete=models.CASCADE, related_name="profile_runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    per_cluster = models.PositiveSmallIntegerField(default=10, help_text="Prompts replayed per cluster.")
    judge = models.CharField(max_length=200, help_text="The judge: an alias or model, called through the engine.")
    estimate = models.JSONField(default=dict, blank=True, help_text="{calls, cost_usd} before it starts.")
    results = models.JSONField(default=dict, blank=True, help_text="{calls, judged, failed, cost_usd}")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"profile run {self.pk} of {self.policy} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED
