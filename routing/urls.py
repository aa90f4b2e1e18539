"""URLs of routing: the REST API under /api/routing/ and the pages under /projects/<slug>/routing."""

from __future__ import annotations

from django.urls import path

from . import api, views

urlpatterns = [
    path("api/routing/policies", api.PolicyListApi.as_view()),
    path("api/routing/policies/<int:pk>", api.PolicyDetailApi.as_view()),
    path("api/routing/policies/<int:pk>/profile", api.PolicyProfileApi.as_view()),
    path("api/routing/profile-runs/<int:pk>", api.ProfileRunDetailApi.as_view()),
    path("api/routing/profile-runs/<int:pk>/start", api.ProfileRunStartApi.as_view()),
    path("api/routing/profile-runs/<int:pk>/cancel", api.ProfileRunCancelApi.as_view()),
    path("projects/<slug:slug>/routing", views.policy_list, name="routing"),
    path("projects/<slug:slug>/overview/saved", views.overview_saved, name="overview_saved"),
    path("projects/<slug:slug>/routing/<int:pk>", views.policy_detail, name="routing_policy"),
    path("projects/<slug:slug>/routing/<int:pk>/delete", views.policy_delete, name="routing_policy_delete"),
    path("projects/<slug:slug>/routing/<int:pk>/profile", views.profile_estimate, name="routing_profile_estimate"),
    path("projects/<slug:slug>/routing/runs/<int:pk>", views.run_fragment, name="routing_run"),
    path("projects/<slug:slug>/routing/runs/<int:pk>/<str:action>", views.run_action, name="routing_run_action"),
]
