"""URLs of distillation: the REST API under /api/distillation/ and the pages under
/projects/<slug>/distillation."""

from __future__ import annotations

from django.urls import path

from . import api

urlpatterns = [
    path("api/distillation/jobs", api.JobListApi.as_view()),
    path("api/distillation/jobs/<int:pk>", api.JobDetailApi.as_view()),
    path("api/distillation/jobs/<int:pk>/cancel", api.JobCancelApi.as_view()),
    path("api/distillation/jobs/<int:pk>/start", api.JobStartApi.as_view()),
    path("api/distillation/jobs/<int:pk>/approve", api.JobApproveApi.as_view()),
    path("api/distillation/jobs/<int:pk>/rollback", api.JobRollbackApi.as_view()),
]
