"""Cleanup runs and the stop decisions they made, kept in PostgreSQL for operators."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from chat.models import ActivityLevel, ChatSession
from previews.models import StopReason

# Runs where something went wrong: a stop failed, or an engine or a session could not be
# handled at all (then only `errors` says so).
WITH_FAILURES = models.Q(failed__gt=0) | ~models.Q(errors=[])


class CleanupRun(models.Model):
    class Trigger(models.TextChoices):
        BEAT = "beat"
        COMMAND = "command"
        API = "api"

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    threshold_minutes = models.PositiveIntegerField()
    dry_run = models.BooleanField(default=False)
    batch_size = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    # When the decisions were made and the stops handed out.
    swept_at = models.DateTimeField(null=True, blank=True)
    # When the last stop of the run was settled.
    finished_at = models.DateTimeField(null=True, blank=True)
    # Previews examined, and how the ones that had to stop ended.
    examined = models.PositiveIntegerField(default=0)
    found = models.PositiveIntegerField(default=0)
    stopped = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # [{"session": "proj/sess", "error": "..."}], one per failed session.
    errors = models.JSONField(default=list, blank=True)
    # Engine list calls and their time, for operators and the benchmarks.
    engine_list_calls = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-started_at"], name="cleanup_run_recent")]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.trigger}, {self.started_at:%Y-%m-%d %H:%M:%S})"

    @property
    def has_failures(self) -> bool:
        return bool(self.failed or self.errors)

    def summary(self) -> dict:
        """The result as the command and the API report it."""
        return {
            "run": self.pk,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "threshold_minutes": self.threshold_minutes,
            "batch_size": self.batch_size,
            "examined": self.examined,
            "found": self.found,
            "stopped": self.stopped,
            "skipped": self.skipped,
            "failed": self.failed,
            "errors": self.errors,
            "finished": self.finished_at is not None,
            "duration_ms": self.duration_ms,
        }


class StopDecision(models.Model):
    """A sweep's decision to stop one preview, and how it ended."""

    class Outcome(models.TextChoices):
        PENDING = "pending"  # handed to a stop task
        STOPPED = "stopped"
        SKIPPED = "skipped"  # re-decided (activity since), kept, or someone else is at it
        FAILED = "failed"
        DRY_RUN = "dry_run"  # would have stopped
        DEFERRED = "deferred"  # beyond the batch size; the next sweep takes it

    run = models.ForeignKey(CleanupRun, on_delete=models.CASCADE, related_name="decisions")
    # Kept when the session goes, with its ids copied, so the history stays readable.
    chat_session = models.ForeignKey(
        ChatSession, on_delete=models.SET_NULL, null=True, related_name="stop_decisions"
    )
    project_id = models.CharField(max_length=64)
    session_id = models.CharField(max_length=64)
    stop_reason = models.CharField(max_length=16, choices=StopReason.choices)
    reason = models.CharField(max_length=255)
    level = models.CharField(max_length=16, choices=ActivityLevel.choices)
    decided_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    outcome_detail = models.TextField(blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["run", "outcome"], name="stop_decision_run_outcome"),
            models.Index(fields=["-decided_at"], name="stop_decision_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}/{self.session_id}: {self.reason} ({self.outcome})"
