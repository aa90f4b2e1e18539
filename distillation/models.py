"""Distillation jobs (a frozen dataset version, a teacher sampled N times per prompt, a judge, a
student base trained with LoRA), the teacher's candidates (stored one by one, so a resumed job
never pays for a sample or a verdict twice), and the students approved from jobs."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from datasets.models import DatasetRow, DatasetVersion
from gateway.models import Project


class DistillationJob(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"  # created with start=false: only the estimate
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="distillation_jobs")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="distillation_jobs")
    teacher = models.CharField(max_length=200, help_text="A model or alias, called through the engine.")
    student = models.CharField(max_length=500, help_text="A registered student base, or a local path.")
    n = models.PositiveSmallIntegerField(default=4, help_text="Teacher samples per training prompt.")
    judge_kind = models.CharField(max_length=16, default="pointwise")
    judge_alias = models.CharField(max_length=200, blank=True, help_text="For LLM judges.")
    judge_options = models.JSONField(default=dict, blank=True)
    settings = models.JSONField(default=dict, blank=True, help_text="Trainer settings (TrainSettings fields).")
    held_out_fraction = models.FloatField(default=0.2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=32, blank=True, help_text="splitting, sampling, judging, training…")
    progress = models.FloatField(default=0.0, help_text="0 to 1 over the whole job.")
    message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    estimate = models.JSONField(default=dict, blank=True)
    split = models.JSONField(default=dict, blank=True, help_text="{train: [row ids], held_out: [row ids]}")
    metrics = models.JSONField(default=dict, blank=True, help_text="{history: [{step, loss, …}], …}")
    evaluation = models.JSONField(default=dict, blank=True)
    adapter_path = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"distillation job {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED


class Candidate(models.Model):
    """One teacher sample for one training row (index 0..n-1), or a person's edit of the row
    (index -1, scored as the top reward)."""

    HUMAN_INDEX = -1

    job = models.ForeignKey(DistillationJob, on_delete=models.CASCADE, related_name="candidates")
    row = models.ForeignKey(DatasetRow, on_delete=models.CASCADE, related_name="+")
    index = models.SmallIntegerField()
    text = models.TextField(blank=True)
    score = models.FloatField(null=True, blank=True, help_text="1/0 for checks, 1-10 for LLM judges.")
    judged = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    teacher_trace_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["row_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "row", "index"], name="candidate_unique")]

    def __str__(self) -> str:
        return f"candidate {self.index} of row {self.row_id}"

    @property
    def human(self) -> bool:
        return self.index == self.HUMAN_INDEX


class Student(models.Model):
    """A trained adapter people approved. `name` (`<base>-v<n>`) is unique across the engine and
    never reused (StudentCounter), so `<serving>/<name>` always means the same weights."""

    class Serving(models.TextChoices):
        LOCAL = "local"  # in-process: transformers + peft (distillation/serving.py)
        VLLM = "vllm"  # loaded into the project's vLLM server (distillation/vllm.py)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="students")
    job = models.ForeignKey(DistillationJob, on_delete=models.PROTECT, related_name="students")
    base = models.CharField(max_length=500)
    adapter_path = models.CharField(max_length=1000)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200, unique=True)
    alias = models.CharField(max_length=100, blank=True, help_text="The alias re-pointed at it on approval.")
    replaced_target = models.CharField(max_length=200, blank=True, help_text="The alias's target before approval.")
    serving = models.CharField(max_length=16, choices=Serving.choices, default=Serving.LOCAL)
    created_by = models.ForeignKey(django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the alias was re-pointed at it: at once on approval, on promotion after a canary (a
    # canary's student is served before it is approved, and one that was stopped never is).
    approved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def model(self) -> str:
        """The gateway model the student is served under: `local/<name>` or `vllm/<name>`."""
        return f"{self.serving}/{self.name}"


class StudentCounter(models.Model):
    """The last version number handed out per name prefix. Kept apart from Student so a number
    stays burned when its student is deleted (with its project) or its approval failed: a vLLM
    server may still hold an adapter under that name, and a name must always mean one set of weights."""

    prefix = models.CharField(max_length=200, unique=True)
    last = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.prefix}-v{self.last}"


class Canary(models.Model):
    """A student answering a share of an alias's live traffic beside the alias's target (the
    incumbent), judged on both sides, until people promote it (the alias is re-pointed at it) or
    stop it."""

    class Status(models.TextChoices):
        RUNNING = "running"
        PROMOTED = "promoted"
        STOPPED = "stopped"

    class Side(models.TextChoices):
        STUDENT = "student"
        INCUMBENT = "incumbent"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="canaries")
    job = models.ForeignKey(DistillationJob, on_delete=models.CASCADE, related_name="canaries")
    student = models.OneToOneField(Student, on_delete=models.CASCADE, related_name="canary")
    alias = models.CharField(max_length=100)
    incumbent = models.CharField(max_length=200, help_text="The alias's target when the canary started.")
    percent = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_by = models.ForeignKey(django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_by = models.CharField(max_length=200, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    judged_at = models.DateTimeField(null=True, blank=True, help_text="The last judging pass.")
    judge_message = models.TextField(blank=True, help_text="What the last judging pass could not do.")

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "alias"], condition=models.Q(status="running"), name="one_running_canary_per_alias"
            )
        ]

    def __str__(self) -> str:
        return f"{self.alias}: {self.percent}% to {self.student} ({self.status})"


class CanaryVerdict(models.Model):
    """The job's judge on one live answer of a canary, from either side."""

    canary = models.ForeignKey(Canary, on_delete=models.CASCADE, related_name="verdicts")
    trace_id = models.UUIDField()
    side = models.CharField(max_length=16, choices=Canary.Side.choices)
    score = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True)
    reason = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="Why the answer could not be judged.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["canary", "trace_id"], name="one_verdict_per_canary_trace")]

    def __str__(self) -> str:
        return f"{self.side} {self.trace_id}: {'unjudged' if self.error else self.score}"


@receiver([post_save, post_delete], sender=Student)
def _student_changed(**kwargs: Any) -> None:
    from gateway import cache

    cache.students_changed()  # the gateway's per-project list of callable students
