"""URL routes: the admin, the JSON API with its schema at /api/openapi.json, and the
Prometheus metrics."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from cleanup.views import metrics
from kosuke.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics, name="metrics"),
]
