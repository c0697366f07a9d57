"""What operators do to the cleanup: pause and resume it, start a run, cancel a run's
stops, retry its failed ones, delete it. Each is recorded as an OperatorAction: who,
when, why.

The paused state is the latest pause or resume in that record (one indexed row), so it
survives restarts and every process reads the same truth. Scheduled sweeps (beat, cron)
read it first and stop nothing while paused; a run an operator asks for still runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from cleanup.handout import handout_clear
from cleanup.metrics import metrics_stops_settled
from cleanup.models import CleanupRun, OperatorAction, StopDecision
from cleanup.progress import progress_pause_changed, progress_stop_settled
from kosuke.database import connection_give_back
from kosuke.errors import ApplicationError


@dataclass(frozen=True)
class Actor:
    """Who does something: a user, or a named machine ("cron", "root (manage.py)")."""

    name: str
    user: AbstractBaseUser | None = None

    @classmethod
    def of(cls, user: AbstractBaseUser) -> Actor:
        return cls(name=user.get_username(), user=user)


def action_record(
    kind: str,
    actor: Actor,
    *,
    run: CleanupRun | None = None,
    reason: str = "",
    run_number: int | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    **details: object,
) -> OperatorAction:
    return OperatorAction.objects.create(
        kind=kind,
        at=now or timezone.now(),
        actor=actor.user,
        actor_name=actor.name,
        run=run,
        run_number=run.pk if run else run_number,
        reason=reason,
        until=until,
        details=details,
    )


# --- pause and resume ---------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    by: str
    reason: str
    since: datetime
    until: datetime | None

    def describe(self) -> str:
        until = f" until {self.until:%Y-%m-%d %H:%M:%S} UTC" if self.until else ""
        return f"paused by {self.by}{until}" + (f": {self.reason}" if self.reason else "")

    def as_dict(self) -> dict:
        return {"by": self.by, "reason": self.reason, "since": self.since, "until": self.until}


def pause_state(now: datetime | None = None) -> Pause | None:
    """The pause in force, or None: one query over the partial index of pauses."""
    now = now or timezone.now()
    latest = (
        OperatorAction.objects.filter(
            kind__in=[OperatorAction.Kind.PAUSE, OperatorAction.Kind.RESUME]
        )
        .order_by("-at", "-pk")
        .only("kind", "at", "actor_name", "reason", "until")
        .first()
    )
    if latest is None or latest.kind != OperatorAction.Kind.PAUSE:
        return None
    if latest.until is not None and latest.until <= now:
        return None  # it ended by itself
    return Pause(by=latest.actor_name, reason=latest.reason, since=latest.at, until=latest.until)


def cleanup_pause(actor: Actor, *, reason: str = "", until: datetime | None = None) -> Pause:
    """Pause scheduled cleanup (until resumed, or until `until`); pausing again replaces
    the reason and the end."""
    now = timezone.now()
    if until is not None and until <= now:
        raise ApplicationError("'until' must be in the future", status=400)
    action_record(OperatorAction.Kind.PAUSE, actor, reason=reason, until=until, now=now)
    pause = Pause(by=actor.name, reason=reason, since=now, until=until)
    progress_pause_changed(pause.as_dict())
    return pause


def cleanup_resume(actor: Actor, *, reason: str = "") -> Pause | None:
    """Resume scheduled cleanup; returns the pause it ended (None: it was not paused)."""
    ended = pause_state()
    action_record(OperatorAction.Kind.RESUME, actor, reason=reason, was_paused=ended is not None)
    progress_pause_changed(None)
    return ended


# --- runs ---------------------------------------------------------------------------


def run_request(
    run: CleanupRun,
    actor: Actor,
    *,
    session_pks: list[int] | None = None,
    reason: str = "",
    start,
) -> CleanupRun:
    """Record a run an operator (or the cron endpoint) asked for, then `start` it
    (`start(run, session_pks)`: hand it to the workers, or sweep in this process)."""
    with transaction.atomic():
        run.save()
        action_record(
            OperatorAction.Kind.TRIGGER,
            actor,
            run=run,
            reason=reason,
            dry_run=run.dry_run,
            sessions=len(session_pks) if session_pks is not None else None,
        )
    start(run, session_pks)
    return run


def run_cancel(run: CleanupRun, actor: Actor, *, reason: str = "") -> dict[str, int]:
    """Cancel the run's stops that have not begun (each settled as cancelled, with who and
    why); a stop already talking to the engine finishes. A run still deciding is marked,
    and settles the stops it records the same way (cleanup.sweep)."""
    if run.is_finished:
        raise ApplicationError(f"run {run.pk} has finished; there is nothing to cancel", status=409)
    now = timezone.now()
    # Who cancelled, and then the mark a sweep still deciding reads (cleanup.sweep): it
    # settles the stops it records as this cancel would have.
    action = action_record(OperatorAction.Kind.CANCEL, actor, run=run, reason=reason, now=now)
    CleanupRun.objects.filter(pk=run.pk, cancelled_at__isnull=True).update(cancelled_at=now)
    cancelled = decisions_cancel(run, _cancel_detail(action), now=now)
    under_way = StopDecision.objects.filter(run=run, outcome=StopDecision.Outcome.PENDING).count()
    action.details = {"cancelled": cancelled, "under_way": under_way}
    action.save(update_fields=["details"])
    return action.details


def _cancel_detail(action: OperatorAction) -> str:
    return f"cancelled by {action.actor_name}" + (f": {action.reason}" if action.reason else "")


def run_cancel_detail(run: CleanupRun) -> str:
    """How the run's latest cancel reads on a decision: "cancelled by X: why"."""
    action = run.actions.filter(kind=OperatorAction.Kind.CANCEL).order_by("-at", "-pk").first()
    return _cancel_detail(action) if action else "cancelled"


def decisions_cancel(run: CleanupRun, detail: str, *, now: datetime | None = None) -> int:
    """Settle as cancelled the run's pending decisions no stop has begun on; returns how
    many. A stop task marks its decision begun in the same row (cleanup.stops), so of a
    cancel and a beginning stop exactly one wins."""
    now = now or timezone.now()
    Outcome = StopDecision.Outcome
    with transaction.atomic():
        decisions = list(
            StopDecision.objects.select_for_update()
            .filter(run=run, outcome=Outcome.PENDING, began_at__isnull=True)
            .only("run_id", "project_id", "session_id", "stop_reason", "reason", "level")
        )
        StopDecision.objects.filter(pk__in=[d.pk for d in decisions]).update(
            outcome=Outcome.CANCELLED, outcome_detail=detail, settled_at=now
        )
    for decision in decisions:
        decision.outcome, decision.outcome_detail = Outcome.CANCELLED, detail
        handout_clear(decision.pk)
        progress_stop_settled(decision)
    metrics_stops_settled(decisions)
    return len(decisions)


def run_retry(run: CleanupRun, actor: Actor, *, reason: str = "", start) -> CleanupRun:
    """Decide again now for the sessions whose stop failed in `run`, as a new run linked
    to it; those still due are stopped. (Failed orphan removals are not retried here:
    every sweep finds the orphans again.)"""
    session_pks = sorted(
        set(
            run.decisions.filter(
                outcome=StopDecision.Outcome.FAILED, chat_session__isnull=False
            ).values_list("chat_session_id", flat=True)
        )
    )
    if not session_pks:
        raise ApplicationError(f"run {run.pk} has no failed stops to retry", status=409)
    retry = CleanupRun.new(
        trigger=CleanupRun.Trigger.API,
        threshold_minutes=run.threshold_minutes,
        batch_size=max(run.batch_size, len(session_pks)),
        retry_of=run,
    )

    def record_then_start(retry: CleanupRun, session_pks: list[int] | None) -> None:
        action_record(OperatorAction.Kind.RETRY, actor, run=run, reason=reason, retry_run=retry.pk)
        start(retry, session_pks)

    return run_request(
        retry, actor, session_pks=session_pks, reason=reason, start=record_then_start
    )


def run_delete(run: CleanupRun, actor: Actor, *, reason: str = "") -> None:
    if not run.is_finished:
        raise ApplicationError(
            f"run {run.pk} has not finished; cancel it first or wait", status=409
        )
    number = run.pk
    with transaction.atomic():
        run.delete()
        action_record(OperatorAction.Kind.DELETE, actor, run_number=number, reason=reason)


def run_wait(run: CleanupRun, timeout: float, *, poll: float = 0.2) -> CleanupRun:
    """The run, read again until it has finished or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        run = CleanupRun.objects.with_counts().select_related("retry_of").get(pk=run.pk)
        if run.is_finished or time.monotonic() >= deadline:
            return run
        connection_give_back()
        time.sleep(poll)
