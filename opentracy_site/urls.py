from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gateway import settings_views
from gateway import views as gateway_views
from gateway.api import AliasDetailApi, AliasListApi, AliasRollbackApi
from opentracy_site import health
from traces import live_views as traces_live_views
from traces import views as traces_views
from traces.api import (
    StatsModelsApi,
    StatsTimeseriesApi,
    TraceDetailApi,
    TraceExportApi,
    TraceIngestApi,
    TraceListApi,
)

urlpatterns = [
    path("", gateway_views.home, name="home"),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", health.metrics),
    path("admin/", admin.site.urls),
    # Every member logs in here; the admin's own login only admits staff.
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/<slug:slug>/providers", gateway_views.providers, name="credentials"),
    path("projects/<slug:slug>/overview", traces_views.overview, name="traces_overview"),
    path("projects/<slug:slug>/traces", traces_views.trace_rows, name="traces_list"),
    path("projects/<slug:slug>/traces/<uuid:trace_id>", traces_views.trace_detail, name="trace_detail"),
    path("projects/<slug:slug>/providers/cooldowns", gateway_views.cooldowns, name="credential_cooldowns"),
    path("projects/<slug:slug>/providers/<int:pk>/edit", gateway_views.credential_edit, name="credential_edit"),
    path("projects/<slug:slug>/providers/<int:pk>/delete", gateway_views.credential_delete, name="credential_delete"),
    path("projects/<slug:slug>/providers/<int:pk>/test", gateway_views.credential_test, name="credential_test"),
    path("projects/<slug:slug>/traces/live", traces_live_views.live_toggle, name="trace_live"),
    path("projects/<slug:slug>/settings", settings_views.settings_page, name="project_settings"),
    path("projects/<slug:slug>/settings/keys", settings_views.key_create, name="settings_key_create"),
    path("projects/<slug:slug>/settings/keys/<int:pk>/revoke", settings_views.key_revoke, name="settings_key_revoke"),
    path("projects/<slug:slug>/settings/aliases", settings_views.alias_save, name="settings_alias_save"),
    path(
        "projects/<slug:slug>/settings/aliases/rollback", settings_views.alias_rollback, name="settings_alias_rollback"
    ),
    path("projects/<slug:slug>/settings/members", settings_views.member_add, name="settings_member_add"),
    path(
        "projects/<slug:slug>/settings/members/<int:pk>/remove",
        settings_views.member_remove,
        name="settings_member_remove",
    ),
    path("projects/<slug:slug>/settings/retention", settings_views.retention_save, name="settings_retention"),
    path("api/aliases", AliasListApi.as_view()),
    path("api/aliases/<str:name>", AliasDetailApi.as_view()),
    path("api/aliases/<str:name>/rollback", AliasRollbackApi.as_view()),
    path("api/traces", TraceListApi.as_view()),
    path("api/traces/ingest", TraceIngestApi.as_view()),
    path("api/traces/export", TraceExportApi.as_view()),
    path("api/stats/timeseries", StatsTimeseriesApi.as_view()),
    path("api/stats/models", StatsModelsApi.as_view()),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/traces/<uuid:trace_id>", TraceDetailApi.as_view()),
    # Datasets: clustering pages and API (datasets/cluster_urls.py).
    path("", include("datasets.cluster_urls")),
    # Datasets: curation pages and API (datasets/dataset_urls.py).
    path("", include("datasets.dataset_urls")),
    # Distillation: jobs, approval and the pages (distillation/urls.py).
    path("", include("distillation.urls")),
    # Routing: policies, profile runs and the Routing page (routing/urls.py).
    path("", include("routing.urls")),
]
