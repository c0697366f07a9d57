"""The preview of a chat session: its state machine and its last stop."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import models
from django.utils import timezone

from chat.heartbeat_cache import stop_inputs_changed
from chat.models import ChatSession


class PreviewState(models.TextChoices):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


class StopReason(models.TextChoices):
    INACTIVE = "inactive", "no activity for longer than the threshold"
    DISCONNECTED = "disconnected", "no viewer after the reconnect grace period"
    MAX_AGE = "max_age", "running longer than the maximum age"
    MANUAL = "manual", "stopped by hand"
    ORPHAN = "orphan", "no live session owns it"
    FAILED_START = "failed_start", "the containers failed to start"
    EXITED = "exited", "the containers exited on their own"
    RETENTION = "retention", "stopped for longer than the retention: containers removed"


# Each state change is a conditional UPDATE from one of these states (Preview.transition).
ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    # STOPPING: its containers are being removed (retention); an open waits for that.
    PreviewState.STOPPED: {PreviewState.STARTING, PreviewState.RUNNING, PreviewState.STOPPING},
    PreviewState.FAILED: {
        PreviewState.STARTING,
        PreviewState.RUNNING,
        PreviewState.STOPPING,
        PreviewState.STOPPED,
    },
    PreviewState.STARTING: {PreviewState.RUNNING, PreviewState.FAILED},
    PreviewState.RUNNING: {PreviewState.STOPPING, PreviewState.STARTING, PreviewState.STOPPED},
    PreviewState.STOPPING: {
        PreviewState.STOPPED,
        PreviewState.RUNNING,
        PreviewState.FAILED,
        PreviewState.STARTING,  # activity came while it was stopping: started again
        PreviewState.STOPPING,  # a stop taken over from a holder that ended
    },
}


class Preview(models.Model):
    session = models.OneToOneField(ChatSession, on_delete=models.CASCADE, related_name="preview")
    state = models.CharField(
        max_length=16, choices=PreviewState.choices, default=PreviewState.STOPPED
    )
    state_changed_at = models.DateTimeField(default=timezone.now)
    # The name of the engine (PREVIEW_ENGINES) holding its containers; "" when none does
    # (never opened, or removed after the retention): its next open is placed afresh.
    engine = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # How the current (or last) run began: opened, or found running, started outside.
    start_detail = models.CharField(max_length=255, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_stop_reason = models.CharField(max_length=16, choices=StopReason.choices, blank=True)
    # In words, for people: "stopped after 30 min without activity".
    last_stop_detail = models.CharField(max_length=255, blank=True)
    last_error = models.TextField(blank=True)
    # Who claimed the current start or stop: a redelivered task carries the same token
    # and may finish what its dead worker began.
    claim_token = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [
            # The sweep's candidate query (cleanup.sweep): previews not known to be stopped.
            # Its cost follows the running previews, never the history of stopped ones.
            models.Index(
                fields=["state"], name="preview_live", condition=~models.Q(state="stopped")
            ),
            # Previews by state for the statistics and /metrics: an index-only count, not
            # a scan of every row (cleanup.stats).
            models.Index(fields=["state"], name="preview_state"),
        ]

    def __str__(self) -> str:
        return f"preview of {self.session} ({self.state})"

    def transition(
        self,
        *,
        from_states: Iterable[str],
        to: str,
        now: datetime,
        guard: models.Q | None = None,
        **fields: Any,
    ) -> bool:
        """Move to `to` if the row is still in one of `from_states` (and matches `guard`):
        one conditional UPDATE; False if someone else changed it first. This instance
        follows the row."""
        from_states = list(from_states)
        for state in from_states:
            if to not in ALLOWED_TRANSITIONS[state]:
                raise ValueError(f"a preview cannot go from {state} to {to}")
        rows = Preview.objects.filter(pk=self.pk, state__in=from_states)
        if guard is not None:
            rows = rows.filter(guard)
        changed = rows.update(state=to, state_changed_at=now, **fields)
        if changed:
            stop_inputs_changed([self.session_id])
            self.state, self.state_changed_at = to, now
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(changed)

    @staticmethod
    def stop_fields(*, now: datetime, reason: str, detail: str) -> dict[str, Any]:
        """The fields every way of ending up stopped writes: when, why, and no error left."""
        return {
            "stopped_at": now,
            "last_stop_reason": reason,
            "last_stop_detail": detail,
            "last_error": "",
            "claim_token": "",
        }

    def last_stop_message(self) -> str:
        """'stopped after 30 min without activity at 14:02 UTC', or '' if never stopped."""
        if not self.stopped_at or not self.last_stop_reason:
            return ""
        detail = self.last_stop_detail or self.get_last_stop_reason_display()
        return f"{detail} at {self.stopped_at:%H:%M} UTC"
