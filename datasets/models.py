"""What people edit about datasets (DESIGN.md "Where data lives"): clustering runs, clusters,
datasets with frozen versions, their rows, edits and judge verdicts. Per-trace facts (prompt
embeddings, which cluster a trace fell in) are high-volume and live in ClickHouse
(datasets/ch_sql.py); rows here point at traces by trace id."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from gateway.models import Project


class ClusteringRun(models.Model):
    """One clustering of a project's traces; a Celery task fills it in and reports progress here."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clustering_runs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=32, blank=True, help_text="selecting, embedding, clustering, naming…")
    progress = models.FloatField(default=0.0, help_text="0 to 1 over the whole run.")
    message = models.TextField(blank=True, help_text="Why it failed, or notes such as truncated prompts.")
    cancel_requested = models.BooleanField(default=False)
    filters = models.JSONField(default=dict, blank=True, help_text="Trace filters, as the traces page's query.")
    params = models.JSONField(default=dict, blank=True, help_text="Prompt fields, reduction, sizes, namer alias.")
    trace_count = models.PositiveIntegerField(default=0)
    noise_count = models.PositiveIntegerField(default=0)
    cluster_count = models.PositiveIntegerField(default=0)
    # Traces newer than this were not in the run; incremental assignment moves it forward.
    assigned_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED


class Cluster(models.Model):
    """A group of traces with one intent. `identity` survives re-runs (matched by member overlap),
    so names, curation flags and datasets built from it are kept."""

    class NameSource(models.TextChoices):
        LLM = "llm"
        KEYWORDS = "keywords"
        PERSON = "person"

    class Status(models.TextChoices):
        ACTIVE = "active"
        MERGED = "merged"  # its members now count toward `merged_into`
        SPLIT = "split"  # replaced by the clusters whose `parent` it is

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clusters")
    run = models.ForeignKey(ClusteringRun, on_delete=models.CASCADE, related_name="clusters")
    label = models.IntegerField(help_text="HDBSCAN's label within the run.")
    identity = models.UUIDField(default=uuid.uuid4, db_index=True)
    name = models.CharField(max_length=200, blank=True)
    description = models.CharField(max_length=500, blank=True)
    name_source = models.CharField(max_length=16, choices=NameSource.choices, default=NameSource.KEYWORDS)
    size = models.PositiveIntegerField(default=0)
    keywords = models.JSONField(default=list, blank=True)
    representatives = models.JSONField(default=list, blank=True, help_text="[{trace_id, prompt}], closest first.")
    cohesion = models.FloatField(null=True, blank=True)
    separation = models.FloatField(null=True, blank=True)
    models_served = models.JSONField(default=list, blank=True, help_text="[{model, requests, cost_usd, error_rate}]")
    cost_usd = models.FloatField(default=0.0)
    error_rate = models.FloatField(default=0.0)
    # float32 unit centroid (embedding space) and the cosine distance within which a new trace joins.
    centroid = models.BinaryField(blank=True, default=b"")
    radius = models.FloatField(default=0.0)
    worth_distilling = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="absorbed")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-size", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "label"], name="cluster_label_unique_per_run")]

    def __str__(self) -> str:
        return self.name or f"cluster {self.label}"


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    clusters = models.ManyToManyField(Cluster, blank=True, related_name="datasets")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """Rows are edited on the open (unfrozen) version; freezing it copies its rows into a new open
    one, so a distillation job can pin a version that never changes."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="dataset_version_unique")]

    def __str__(self) -> str:
        return f"{self.dataset} v{self.number}"

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


class DatasetRow(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        KEEP = "keep"
        DROP = "drop"

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="rows")
    trace_id = models.UUIDField(null=True, blank=True, help_text="Empty for imported rows.")
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="rows")
    messages = models.JSONField(default=list, help_text="The prompt as OpenAI chat messages.")
    response = models.TextField(blank=True, help_text="What the model answered (kept as is).")
    edited_response = models.TextField(blank=True, help_text="A person's correction: the training target.")
    reference = models.TextField(blank=True, help_text="An expected answer, for exact-match checks.")
    model = models.CharField(max_length=200, blank=True)
    cost_usd = models.FloatField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    revision = models.PositiveIntegerField(default=0, help_text="Bumped on every edit; a stale write is refused.")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["version", "status"]), models.Index(fields=["version", "model"])]

    def __str__(self) -> str:
        return f"row {self.pk} of {self.version_id}"

    @property
    def target(self) -> str:
        """The training target: a person's edit when there is one."""
        return self.edited_response or self.response


class RowEdit(models.Model):
    """Audit of every change to a row (who, what, before and after)."""

    row = models.ForeignKey(DatasetRow, on_delete=models.CASCADE, related_name="edits")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    field = models.CharField(max_length=32)
    old = models.TextField(blank=True)
    new = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.field} of row {self.row_id}"


class JudgeRun(models.Model):
    """Scoring a dataset version's rows with an LLM judge or a programmatic check (a Celery task)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="judge_runs")
    kind = models.CharField(max_length=16, help_text="pointwise, pairwise, json, json_schema, regex, exact")
    judge = models.CharField(max_length=200, blank=True, help_text="The alias for LLM judges; the check name else.")
    judge_version = models.CharField(max_length=64, blank=True, help_text="Hash of the rubric, alias target, options.")
    options = models.JSONField(default=dict, blank=True, help_text="Rubric, schema, pattern, pairwise model…")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.judge} ({self.status})"


class Verdict(models.Model):
    """One judgement of one row by one judge version; a person's override is kept beside it."""

    row = models.ForeignKey(DatasetRow, on_delete=models.CASCADE, related_name="verdicts")
    judge_run = models.ForeignKey(JudgeRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="verdicts")
    judge = models.CharField(max_length=200)
    judge_version = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=16)
    score = models.FloatField(null=True, blank=True, help_text="1-10 overall (LLM judges).")
    scores = models.JSONField(default=dict, blank=True, help_text="correctness, helpfulness, format")
    passed = models.BooleanField(null=True, help_text="Checks: passed or not; LLM judges: score >= threshold.")
    reason = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="Why no verdict could be had (garbage after retries).")
    override_passed = models.BooleanField(null=True, blank=True)
    override_reason = models.TextField(blank=True)
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["row", "judge", "judge_version"], name="verdict_unique_per_judge_version")
        ]

    def __str__(self) -> str:
        return f"{self.judge} on row {self.row_id}"

    @property
    def flagged(self) -> bool:
        """Failed, after any person's override."""
        verdict = self.override_passed if self.override_passed is not None else self.passed
        return verdict is False
