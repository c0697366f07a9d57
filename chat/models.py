"""Chat sessions, their messages, and the API tokens their owners use."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

# Project and session ids end up in Docker labels and URLs: keep them to a safe alphabet.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
identifier_validator = RegexValidator(
    IDENTIFIER_PATTERN,
    "Use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
)

# Activity levels by time since the last activity (seed 002).
ACTIVE_WITHIN = timedelta(minutes=2)
IDLE_WITHIN = timedelta(minutes=10)
IDLE_TIMEOUT_MAX_MINUTES = 7 * 24 * 60


class ActivityLevel(models.TextChoices):
    ACTIVE = "active", "active (< 2 min)"
    IDLE = "idle", "idle (2-10 min)"
    BACKGROUND = "background", "background (> 10 min)"
    DISCONNECTED = "disconnected", "disconnected (no viewer)"


def activity_level(
    quiet_for: timedelta, *, threshold: timedelta | None = None, viewer_left: bool = False
) -> ActivityLevel:
    """The one classification: disconnected once the last viewer has left (the cleanup
    rules know that from presence), otherwise by the time since the last activity.

    The bands (2 and 10 minutes) end at the inactivity `threshold` when it is shorter (a
    session's own timeout of 1 minute): a session past its threshold is background,
    never "active" next to "stopped after 1 min without activity"."""
    if viewer_left:
        return ActivityLevel.DISCONNECTED
    active_within, idle_within = _bands(threshold)
    if quiet_for < active_within:
        return ActivityLevel.ACTIVE
    if quiet_for < idle_within:
        return ActivityLevel.IDLE
    return ActivityLevel.BACKGROUND


def _bands(threshold: timedelta | None) -> tuple[timedelta, timedelta]:
    if threshold is None:
        return ACTIVE_WITHIN, IDLE_WITHIN
    return min(ACTIVE_WITHIN, threshold), min(IDLE_WITHIN, threshold)


class ChatSession(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions"
    )
    project_id = models.CharField(max_length=64, validators=[identifier_validator])
    session_id = models.CharField(max_length=64, validators=[identifier_validator])
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Moves only forward, and only through chat.services.activity_record.
    last_activity_at = models.DateTimeField(default=timezone.now)
    # Per-session override of CLEANUP_THRESHOLD_MINUTES.
    idle_timeout_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(IDLE_TIMEOUT_MAX_MINUTES)],
        help_text="Minutes without activity before the preview stops; empty uses the default.",
    )
    # Keep-alive: while in the future, the preview is never stopped automatically.
    busy_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Unique per owner: another user's ids are invisible, never "taken".
            models.UniqueConstraint(
                fields=["owner", "project_id", "session_id"], name="chat_session_unique"
            ),
        ]
        indexes = [
            # Sessions by last activity: the admin's activity-level filter and ordering.
            models.Index(fields=["last_activity_at"], name="chat_session_last_activity"),
            # The API's list: one owner's sessions in a project, most recently active first.
            models.Index(
                fields=["owner", "project_id", "-last_activity_at"], name="chat_session_owner_list"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}/{self.session_id}"

    @property
    def threshold(self) -> timedelta:
        """Inactivity that stops its preview: its own timeout, or the configured one."""
        return timedelta(minutes=self.idle_timeout_minutes or settings.CLEANUP_THRESHOLD_MINUTES)

    def activity_level(self, now: datetime) -> ActivityLevel:
        return activity_level(now - self.last_activity_at, threshold=self.threshold)


class ChatMessage(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            # The API lists one session's messages in order.
            models.Index(fields=["session", "created_at", "id"], name="chat_message_by_session"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only a hash is stored; the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    # The first characters of the token, so operators can tell tokens apart.
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
