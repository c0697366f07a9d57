"""Cleanup runs and the stop decisions they made, kept in PostgreSQL for operators.

A run's numbers are not kept in step by hand: they are counted from its decisions (one
aggregate query over the `stop_decision_run_outcome` index), and a run is finished
exactly when its sweep is done and none of its decisions is pending. The run stores only
what no decision row says: how many previews it examined, how many stops it left for
the next sweep (deferred), how many previews it could not decide, and its errors.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property

from django.conf import settings
from django.db import models
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from chat.models import ActivityLevel, ChatSession
from previews.models import StopReason


def _decisions_of_run(**filters: object) -> Exists:
    return Exists(StopDecision.objects.filter(run=OuterRef("pk"), **filters))


class CleanupRunQuerySet(models.QuerySet):
    def with_counts(self) -> CleanupRunQuerySet:
        """Each run with its decisions counted by outcome, for lists (no query per run)."""
        counts = {
            f"n_{outcome}": Count("decisions", filter=Q(decisions__outcome=outcome))
            for outcome in StopDecision.Outcome.values
        }
        return self.annotate(**counts, last_settled_at=Max("decisions__settled_at"))

    def finished(self) -> CleanupRunQuerySet:
        return self.filter(swept_at__isnull=False).exclude(
            _decisions_of_run(outcome=StopDecision.Outcome.PENDING)
        )

    def unfinished(self) -> CleanupRunQuerySet:
        return self.filter(
            Q(swept_at__isnull=True) | _decisions_of_run(outcome=StopDecision.Outcome.PENDING)
        )

    def found_nothing(self) -> CleanupRunQuerySet:
        """Runs with nothing due to stop (most beat sweeps)."""
        return self.filter(deferred=0).exclude(_decisions_of_run())

    def found_something(self) -> CleanupRunQuerySet:
        return self.exclude(pk__in=self.found_nothing().values("pk"))

    def with_failures(self) -> CleanupRunQuerySet:
        """Runs where something went wrong: a stop failed, or an engine or a session could
        not be handled at all."""
        return self.filter(
            _decisions_of_run(outcome=StopDecision.Outcome.FAILED)
            | Q(undecided__gt=0)
            | ~Q(sweep_errors=[])
        )

    def without_failures(self) -> CleanupRunQuerySet:
        return self.exclude(pk__in=self.with_failures().values("pk"))


class CleanupRun(models.Model):
    class Trigger(models.TextChoices):
        BEAT = "beat"
        COMMAND = "command"
        API = "api"  # an operator, through the operator API or the dashboard
        CRON = "cron"  # an external scheduler, through the cron endpoint

    # Scheduled sweeps; while cleanup is paused they record a run and stop nothing.
    SCHEDULED = (Trigger.BEAT, Trigger.CRON)

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    threshold_minutes = models.PositiveIntegerField()
    dry_run = models.BooleanField(default=False)
    batch_size = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    # When the decisions were made and the stops handed out: the sweep is done.
    swept_at = models.DateTimeField(null=True, blank=True)
    # Previews examined; stops due beyond the batch size (the next sweep takes them);
    # previews that could not be decided (their engine unreachable, an error).
    examined = models.PositiveIntegerField(default=0)
    deferred = models.PositiveIntegerField(default=0)
    undecided = models.PositiveIntegerField(default=0)
    # [{"engine": url, "error": ...}, {"session": "proj/sess", "error": ...}]: what the
    # sweep itself could not do. Failed stops say why in their decisions.
    sweep_errors = models.JSONField(default=list, blank=True)
    # Engine list calls and their time, for operators and the benchmarks.
    engine_list_calls = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # A scheduled sweep while cleanup was paused: it recorded this run and did nothing.
    paused = models.BooleanField(default=False)
    # What an operator should know about this run ("paused by alice: deploy", ...).
    note = models.CharField(max_length=500, blank=True)
    # An operator cancelled it: its stops not yet begun were settled as cancelled.
    cancelled_at = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries"
    )

    objects = CleanupRunQuerySet.as_manager()
    # Not stored: the previews the sweep kept running and why ("session", Decision), for
    # whoever ran it to read (only stops are recorded as decisions).
    kept: list = ()

    class Meta:
        indexes = [models.Index(fields=["-started_at"], name="cleanup_run_recent")]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.trigger}, {self.started_at:%Y-%m-%d %H:%M:%S})"

    @classmethod
    def new(
        cls,
        *,
        trigger: str,
        threshold_minutes: int | None = None,
        batch_size: int | None = None,
        dry_run: bool = False,
        retry_of: CleanupRun | None = None,
    ) -> CleanupRun:
        """A run not yet saved, with the settings' defaults filled in."""
        return cls(
            trigger=trigger,
            threshold_minutes=threshold_minutes or settings.CLEANUP_THRESHOLD_MINUTES,
            batch_size=batch_size or settings.CLEANUP_BATCH_SIZE,
            dry_run=dry_run,
            retry_of=retry_of,
        )

    @cached_property
    def _tally(self) -> tuple[dict[str, int], datetime | None]:
        """Decisions by outcome, and when the last one settled: one aggregate query, or
        none when the run was read with `with_counts()`."""
        outcomes = StopDecision.Outcome.values
        if hasattr(self, "n_pending"):
            return {o: getattr(self, f"n_{o}") for o in outcomes}, self.last_settled_at
        counts, last_settled_at = dict.fromkeys(outcomes, 0), None
        rows = self.decisions.values_list("outcome").annotate(n=Count("pk"), last=Max("settled_at"))
        for outcome, n, last in rows:
            counts[outcome] = n
            if last and (last_settled_at is None or last > last_settled_at):
                last_settled_at = last
        return counts, last_settled_at

    @property
    def counts(self) -> dict[str, int]:
        return self._tally[0]

    @property
    def found(self) -> int:
        """Previews due to stop: decided (whatever became of it) or deferred."""
        return sum(self.counts.values()) + self.deferred

    @property
    def stopped(self) -> int:
        return self.counts[StopDecision.Outcome.STOPPED]

    @property
    def skipped(self) -> int:
        """Due, and not stopped on purpose: kept after all, a dry run, or deferred."""
        return (
            self.counts[StopDecision.Outcome.SKIPPED]
            + self.counts[StopDecision.Outcome.DRY_RUN]
            + self.deferred
        )

    @property
    def failed(self) -> int:
        return self.counts[StopDecision.Outcome.FAILED]

    @property
    def pending(self) -> int:
        return self.counts[StopDecision.Outcome.PENDING]

    @property
    def cancelled(self) -> int:
        return self.counts[StopDecision.Outcome.CANCELLED]

    @property
    def is_finished(self) -> bool:
        return self.swept_at is not None and not self.pending

    @property
    def finished_at(self) -> datetime | None:
        """When the last of its stops settled (or the sweep ended, if that was later)."""
        if not self.is_finished:
            return None
        last = self._tally[1]
        return max(last, self.swept_at) if last else self.swept_at

    @property
    def has_failures(self) -> bool:
        return bool(self.failed or self.undecided or self.sweep_errors)

    @property
    def errors(self) -> list[dict[str, str]]:
        """What went wrong: the sweep's own errors, then each failed stop's."""
        failed = []
        if self.failed:
            failed = [
                {"session": f"{project_id}/{session_id}", "error": detail}
                for project_id, session_id, detail in self.decisions.filter(
                    outcome=StopDecision.Outcome.FAILED
                )
                .order_by("pk")
                .values_list("project_id", "session_id", "outcome_detail")
            ]
        return [*self.sweep_errors, *failed]

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
            "cancelled": self.cancelled,
            "pending": self.pending,
            "deferred": self.deferred,
            "dry_run_stops": self.counts[StopDecision.Outcome.DRY_RUN],
            "undecided": self.undecided,
            "errors": self.errors,
            "finished": self.is_finished,
            "duration_ms": self.duration_ms,
            "paused": self.paused,
            "note": self.note,
            "retry_of": self.retry_of_id,
        }


class StopDecision(models.Model):
    """A sweep's decision to stop one preview, and how it ended."""

    class Outcome(models.TextChoices):
        PENDING = "pending"  # handed to a stop task
        STOPPED = "stopped"
        SKIPPED = "skipped"  # re-decided (activity since), kept, or someone else is at it
        FAILED = "failed"
        DRY_RUN = "dry_run"  # would have stopped
        CANCELLED = "cancelled"  # an operator cancelled it before it began

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
    # The running containers the sweep listed: [{"id": ..., "kept": bool}]. The stop
    # stops these without listing again.
    containers = models.JSONField(default=list, blank=True)
    decided_at = models.DateTimeField(default=timezone.now)
    # When the rule that stops it began to apply (the threshold crossed, ...): how long
    # a preview ran past it is `settled_at - due_at`.
    due_at = models.DateTimeField(null=True, blank=True)
    # When a stop task began on it; from then on a cancel leaves it to finish.
    began_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    outcome_detail = models.TextField(blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # A run's numbers: one aggregate over its decisions by outcome.
            models.Index(fields=["run", "outcome"], name="stop_decision_run_outcome"),
            models.Index(fields=["-decided_at"], name="stop_decision_recent"),
            # Stops under way (every sweep skips their sessions, and settles lost ones):
            # the cost follows the pending decisions, never the history.
            models.Index(
                fields=["decided_at"],
                include=["chat_session"],
                name="stop_decision_pending",
                condition=Q(outcome="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}/{self.session_id}: {self.reason} ({self.outcome})"


class OperatorAction(models.Model):
    """Something a person (or the cron endpoint) did to the cleanup: who, when, and why.

    The latest pause or resume is also the cleanup's paused state (cleanup.control).
    """

    class Kind(models.TextChoices):
        TRIGGER = "trigger"
        CANCEL = "cancel"
        RETRY = "retry"
        DELETE = "delete"
        PAUSE = "pause"
        RESUME = "resume"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # Kept when the user goes: a username, "cron", or "<os user> (manage.py)".
    actor_name = models.CharField(max_length=150)
    run = models.ForeignKey(
        CleanupRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="actions"
    )
    # The run's number, kept when the run is deleted.
    run_number = models.PositiveIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    until = models.DateTimeField(null=True, blank=True)  # a pause ends by itself then
    # What it did: {"cancelled": 3, "under_way": 1}, {"retry_run": 12}, ...
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["-at"], name="operator_action_recent"),
            # The paused state: the latest pause or resume, read by every sweep.
            models.Index(
                fields=["-at"],
                name="operator_action_pause",
                condition=Q(kind__in=["pause", "resume"]),
            ),
        ]

    def __str__(self) -> str:
        run = f" run {self.run_number}" if self.run_number else ""
        return f"{self.actor_name} {self.kind}{run} at {self.at:%Y-%m-%d %H:%M:%S}"

    @property
    def details_in_words(self) -> str:
        """What the details say, for people: "cancelled 2, under way 4", "dry run"."""
        words = []
        for key, value in self.details.items():
            name = key.replace("_", " ")
            if value is True:
                words.append(name)
            elif value not in (None, False):
                words.append(f"{name} {value}")
        return ", ".join(words)


class StopRollup(models.Model):
    """Stop decisions counted per hour once the hour is final (none pending): statistics
    over days read these instead of every decision (cleanup.rollups). Kept when the
    decisions go with their runs, so the history's retention never changes the numbers.
    """

    hour = models.DateTimeField()
    stop_reason = models.CharField(max_length=16, choices=StopReason.choices)
    outcome = models.CharField(max_length=16, choices=StopDecision.Outcome.choices)
    # Stopped ones only: which bucket of time past the threshold (cleanup.rollups).
    late_bucket = models.PositiveSmallIntegerField(null=True)
    decisions = models.PositiveIntegerField()
    late_seconds = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "stop_reason", "outcome", "late_bucket"],
                name="stop_rollup_unique",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.stop_reason} {self.outcome}: {self.decisions}"
