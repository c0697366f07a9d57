"""URL routes: the admin, and the JSON API with its schema at /api/openapi.json."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from kosuke.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
