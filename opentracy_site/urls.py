from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gateway import views as gateway_views
from gateway.api import AliasDetailApi, AliasListApi, AliasRollbackApi
from opentracy_site import health
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
    path("projects/<slug:slug>/providers", gateway_views.providers, name="credentials"),
    path("projects/<slug:slug>/providers/cooldowns", gateway_views.cooldowns, name="credential_cooldowns"),
    path("projects/<slug:slug>/providers/<int:pk>/edit", gateway_views.credential_edit, name="credential_edit"),
    path("projects/<slug:slug>/providers/<int:pk>/delete", gateway_views.credential_delete, name="credential_delete"),
    path("projects/<slug:slug>/providers/<int:pk>/test", gateway_views.credential_test, name="credential_test"),
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
]
