"""The operations dashboard's pages and controls (cleanup.pages), under /ops/; its live
feed, /ops/events, is served beside Django (kosuke.asgi)."""

from __future__ import annotations

from django.urls import path

from cleanup import pages

app_name = "ops"
urlpatterns = [
    path("", pages.overview, name="overview"),
    path("runs/", pages.run_list, name="runs"),
    path("runs/start", pages.sweep_start, name="sweep"),
    path("runs/<int:run_id>/", pages.run_detail, name="run"),
    path("runs/<int:run_id>/cancel", pages.run_cancel, name="cancel"),
    path("runs/<int:run_id>/retry", pages.run_retry, name="retry"),
    path("pause", pages.pause, name="pause"),
    path("resume", pages.resume, name="resume"),
    path("preview", pages.preview_control, name="preview"),
]
