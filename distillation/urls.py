"""URLs of distillation: the REST API under /api/distillation/ and the pages under
/projects/<slug>/distillation."""

from __future__ import annotations

from django.urls import path

from . import api, canary_api, canary_views, views

JOB_PAGE = "projects/<slug:slug>/distillation/<int:pk>"

urlpatterns = [
    path("api/distillation/jobs", api.JobListApi.as_view()),
    path("api/distillation/jobs/<int:pk>", api.JobDetailApi.as_view()),
    path("api/distillation/jobs/<int:pk>/cancel", api.JobCancelApi.as_view()),
    path("api/distillation/jobs/<int:pk>/start", api.JobStartApi.as_view()),
    path("api/distillation/jobs/<int:pk>/approve", api.JobApproveApi.as_view()),
    path("api/distillation/jobs/<int:pk>/rollback", api.JobRollbackApi.as_view()),
    path("api/distillation/jobs/<int:pk>/export", api.JobExportApi.as_view()),
    path("api/distillation/jobs/<int:pk>/canary", canary_api.JobCanaryApi.as_view()),
    path("api/distillation/jobs/<int:pk>/canary/judge", canary_api.JobCanaryJudgeApi.as_view()),
    path("api/distillation/jobs/<int:pk>/canary/promote", canary_api.JobCanaryPromoteApi.as_view()),
    path("api/distillation/jobs/<int:pk>/canary/stop", canary_api.JobCanaryStopApi.as_view()),
    path("projects/<slug:slug>/distillation", views.job_list, name="distillation_jobs"),
    path("projects/<slug:slug>/distillation/new", views.job_new, name="distillation_new"),
    path("projects/<slug:slug>/distillation/<int:pk>", views.job_detail, name="distillation_job"),
    path("projects/<slug:slug>/distillation/<int:pk>/start", views.job_start, name="distillation_job_start"),
    path("projects/<slug:slug>/distillation/<int:pk>/cancel", views.job_cancel, name="distillation_job_cancel"),
    path("projects/<slug:slug>/distillation/<int:pk>/approve", views.job_approve, name="distillation_job_approve"),
    path(f"{JOB_PAGE}/canary", canary_views.canary_panel, name="job_canary_panel"),
    path(f"{JOB_PAGE}/canary/start", canary_views.canary_start, name="job_canary_start"),
    path(f"{JOB_PAGE}/canary/<slug:action>", canary_views.canary_action, name="job_canary"),
    path("projects/<slug:slug>/overview/distilled", views.overview_cost, name="overview_distilled"),
]
