"""Previews in the admin: read-only; they change through the session actions and the sweep."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from previews.models import Preview


@admin.register(Preview)
class PreviewAdmin(admin.ModelAdmin):
    list_display = (
        "session",
        "state",
        "state_changed_at",
        "started_at",
        "start_detail",
        "stopped_at",
        "last_stop_reason",
        "engine",
    )
    list_filter = ("state", "last_stop_reason", "engine")
    search_fields = ("session__project_id", "session__session_id", "session__owner__username")
    list_select_related = ("session",)
    date_hierarchy = "state_changed_at"
    # Whose stop holds it is the stop tasks' business, not an operator's.
    exclude = ("claim_token",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Preview | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Preview | None = None) -> bool:
        return False  # a row deleted here would leave its containers running, unknown
