"""URLs of clustering: the REST API under /api/ and the pages under /projects/<slug>/clusters."""

from __future__ import annotations

from django.urls import path

from . import api, views

urlpatterns = [
    path("api/clustering/runs", api.RunListApi.as_view()),
    path("api/clustering/runs/<int:pk>", api.RunDetailApi.as_view()),
    path("api/clustering/runs/<int:pk>/cancel", api.RunCancelApi.as_view()),
    path("api/clusters/<int:pk>", api.ClusterDetailApi.as_view()),
    path("api/clusters/<int:pk>/traces", api.ClusterTracesApi.as_view()),
    path("api/clusters/<int:pk>/merge", api.ClusterMergeApi.as_view()),
    path("api/clusters/<int:pk>/split", api.ClusterSplitApi.as_view()),
    path("projects/<slug:slug>/clusters", views.clusters, name="clusters"),
    path("projects/<slug:slug>/clusters/runs", views.run_start, name="clusters_run_start"),
    path("projects/<slug:slug>/clusters/runs/<int:pk>/progress", views.run_progress, name="clusters_run_progress"),
    path("projects/<slug:slug>/clusters/runs/<int:pk>/cancel", views.run_cancel, name="clusters_run_cancel"),
    path("projects/<slug:slug>/clusters/merge", views.cluster_merge, name="cluster_merge"),
    path("projects/<slug:slug>/clusters/<int:pk>", views.cluster_detail, name="cluster_detail"),
    path("projects/<slug:slug>/clusters/<int:pk>/update", views.cluster_update, name="cluster_update"),
    path("projects/<slug:slug>/clusters/<int:pk>/split", views.cluster_split, name="cluster_split"),
]
