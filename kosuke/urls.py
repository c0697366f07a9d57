"""URL routes: the admin, the JSON API with its schema at /api/openapi.json, the
Prometheus metrics and the operations dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from cleanup.views import metrics
from kosuke.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics, name="metrics"),
    path("ops/", include("cleanup.urls")),
    # Browsers ask every site for one; the pages name their own. No 404 logged for it.
    path("favicon.ico", lambda request: HttpResponse(status=204)),
]
