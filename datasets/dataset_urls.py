"""URLs of dataset curation: the REST API under /api/ and the pages under /projects/<slug>/datasets."""

from __future__ import annotations

from django.urls import path

from . import dataset_api as api
from . import dataset_views as views

urlpatterns = [
    path("api/datasets", api.DatasetListApi.as_view()),
    path("api/datasets/import", api.DatasetImportApi.as_view()),
    path("api/datasets/<int:pk>", api.DatasetDetailApi.as_view()),
    path("api/datasets/<int:pk>/rows", api.RowListApi.as_view()),
    path("api/datasets/<int:pk>/rows/bulk", api.RowBulkApi.as_view()),
    path("api/datasets/<int:pk>/rows/<int:row_id>", api.RowDetailApi.as_view()),
    path("api/datasets/<int:pk>/freeze", api.FreezeApi.as_view()),
    path("api/datasets/<int:pk>/judge", api.JudgeStartApi.as_view()),
    path("api/datasets/<int:pk>/export", api.ExportApi.as_view()),
    path("api/judge-runs/<int:pk>", api.JudgeRunApi.as_view()),
    path("api/judge-runs/<int:pk>/cancel", api.JudgeRunCancelApi.as_view()),
    path("api/verdicts/<int:pk>/override", api.VerdictOverrideApi.as_view()),
    path("projects/<slug:slug>/datasets", views.dataset_list, name="datasets_list"),
    path("projects/<slug:slug>/datasets/create", views.dataset_create, name="dataset_create"),
    path("projects/<slug:slug>/datasets/<int:pk>", views.dataset_detail, name="dataset_detail"),
    path(
        "projects/<slug:slug>/datasets/<int:pk>/rows/<int:row_id>/status", views.row_status, name="dataset_row_status"
    ),
    path("projects/<slug:slug>/datasets/<int:pk>/rows/<int:row_id>/edit", views.row_edit, name="dataset_row_edit"),
    path("projects/<slug:slug>/datasets/<int:pk>/bulk", views.rows_bulk, name="dataset_rows_bulk"),
    path("projects/<slug:slug>/datasets/<int:pk>/freeze", views.freeze, name="dataset_freeze"),
    path("projects/<slug:slug>/datasets/<int:pk>/judge", views.judge_start, name="dataset_judge"),
    path("projects/<slug:slug>/datasets/<int:pk>/judge/<int:run_id>", views.judge_progress, name="dataset_judge_run"),
    path(
        "projects/<slug:slug>/datasets/<int:pk>/verdicts/<int:verdict_id>/override",
        views.verdict_override_view,
        name="dataset_verdict_override",
    ),
]
