"""Admin for chat sessions (with their messages) and API tokens."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from chat.models import ActivityLevel, ApiToken, ChatMessage, ChatSession
from chat.selectors import sessions_at_level
from chat.tokens import api_token_create
from kosuke.errors import ApplicationError
from previews.remote import preview_ask
from previews.services import PreviewAction


class ActivityLevelFilter(admin.SimpleListFilter):
    """Filter by level (chat.selectors.sessions_at_level)."""

    title = "activity level"
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        levels = (ActivityLevel.ACTIVE, ActivityLevel.IDLE, ActivityLevel.BACKGROUND)
        return [(level.value, level.label) for level in levels]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return sessions_at_level(queryset, self.value(), timezone.now())


class ChatMessageInline(admin.TabularInline):
    """The conversation, read-only: messages are written by the API, not edited here."""

    model = ChatMessage
    fields = ("created_at", "role", "content")
    readonly_fields = fields
    ordering = ("created_at", "id")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: ChatSession | None = None) -> bool:
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = (
        "project_id",
        "session_id",
        "title",
        "owner",
        "last_activity_at",
        "activity_level_display",
        "preview_state",
    )
    list_filter = (ActivityLevelFilter, "preview__state", "created_at")
    search_fields = ("project_id", "session_id", "title", "owner__username", "owner__email")
    date_hierarchy = "last_activity_at"
    list_select_related = ("owner", "preview")
    ordering = ("-last_activity_at",)
    actions = ("stop_preview_now", "open_preview")
    readonly_fields = (
        "created_at",
        "updated_at",
        "last_activity_at",
        "activity_level_display",
        "preview_state",
        "preview_last_stop",
    )
    raw_id_fields = ("owner",)
    inlines = [ChatMessageInline]
    fieldsets = (
        (None, {"fields": ("owner", "project_id", "session_id", "title")}),
        ("Cleanup", {"fields": ("idle_timeout_minutes", "busy_until")}),
        (
            "Activity",
            {"fields": ("last_activity_at", "activity_level_display", "created_at", "updated_at")},
        ),
        ("Preview", {"fields": ("preview_state", "preview_last_stop")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: ChatSession | None = None):
        # Renaming a session would orphan its containers (their labels carry the ids).
        if obj is None:
            return self.readonly_fields
        return (*self.readonly_fields, "owner", "project_id", "session_id")

    @admin.display(description="activity level")
    def activity_level_display(self, session: ChatSession) -> str:
        return session.activity_level(timezone.now()).label

    @admin.display(description="preview", ordering="preview__state")
    def preview_state(self, session: ChatSession) -> str:
        preview = getattr(session, "preview", None)
        return preview.state if preview else "-"

    @admin.display(description="last stop")
    def preview_last_stop(self, session: ChatSession) -> str:
        preview = getattr(session, "preview", None)
        return (preview.last_stop_message() if preview else "") or "-"

    # Changing a preview's state needs the change permission, not just the view one.
    @admin.action(description="Stop preview now", permissions=["change"])
    def stop_preview_now(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        self._each_session(request, queryset, PreviewAction.STOP, done="stopped")

    @admin.action(description="Open preview", permissions=["change"])
    def open_preview(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        self._each_session(request, queryset, PreviewAction.OPEN, done="opened")

    def _each_session(
        self,
        request: HttpRequest,
        queryset: QuerySet[ChatSession],
        action: PreviewAction,
        *,
        done: str,
    ) -> None:
        """Ask a worker to `action` each preview; one failure does not stop the others."""
        succeeded = 0
        actor = f"{request.user} (admin site)"
        for session in queryset:
            try:
                preview_ask(session=session, action=action, actor=actor)
                succeeded += 1
            except ApplicationError as exc:
                self.message_user(request, f"{session}: {exc.message}", messages.ERROR)
        if succeeded:
            sessions = "1 session" if succeeded == 1 else f"{succeeded} sessions"
            self.message_user(request, f"{done.capitalize()} the preview of {sessions}.")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    fields = ("user", "name")

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        # A token cannot be edited, only created or revoked (deleted).
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change: bool) -> None:
        token, raw_token = api_token_create(user=obj.user, name=obj.name)
        obj.pk, obj.prefix = token.pk, token.prefix
        messages.warning(
            request, f"API token for {obj.user}: {raw_token} (copy it now; it is not shown again)"
        )
