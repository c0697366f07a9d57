"""The decision rules: should this preview stop now, and why. Pure: no I/O, no clock.

`decide(snapshot, now, policy)` is the only place the rules live; the sweep calls it for
every running preview and the stop task calls it again just before stopping.
`stop_due(snapshot, policy)` tells from the same rules when `decide` will say stop, for
the people watching the preview.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings

from chat.models import ActivityLevel, activity_level
from previews.models import Preview, PreviewState, StopReason


@dataclass(frozen=True)
class Policy:
    threshold: timedelta  # inactivity that stops a preview (sessions may override it)
    grace: timedelta  # after the last viewer left, time allowed for a reconnect
    ping_timeout: timedelta  # a viewer unseen this long has left
    max_age: timedelta | None  # a preview never runs longer than this (None: no limit)

    @classmethod
    def from_settings(cls, *, threshold_minutes: int | None = None) -> Policy:
        max_age = settings.PREVIEW_MAX_AGE_MINUTES
        return cls(
            threshold=timedelta(minutes=threshold_minutes or settings.CLEANUP_THRESHOLD_MINUTES),
            grace=timedelta(seconds=settings.CLEANUP_GRACE_SECONDS),
            ping_timeout=timedelta(seconds=settings.PRESENCE_PING_TIMEOUT_SECONDS),
            max_age=timedelta(minutes=max_age) if max_age else None,
        )


@dataclass(frozen=True)
class Snapshot:
    """What the rules need to know about one session and its preview."""

    preview_state: str
    last_activity_at: datetime
    idle_timeout: timedelta | None = None  # the session's override of the threshold
    busy_until: datetime | None = None
    started_at: datetime | None = None
    last_seen_at: datetime | None = None  # the last heartbeat of any viewer
    kept: bool = False  # every running container is labelled kosuke.keep=true

    @classmethod
    def of(cls, preview: Preview, *, last_seen_at: datetime | None, kept: bool) -> Snapshot:
        session = preview.session
        return cls(
            preview_state=preview.state,
            last_activity_at=session.last_activity_at,
            idle_timeout=timedelta(minutes=session.idle_timeout_minutes)
            if session.idle_timeout_minutes
            else None,
            busy_until=session.busy_until,
            started_at=preview.started_at,
            last_seen_at=last_seen_at,
            kept=kept,
        )


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str
    level: ActivityLevel
    stop_reason: StopReason | None = None
    due_at: datetime | None = None  # when the rule that stops it began to apply


@dataclass(frozen=True)
class StopDue:
    """A stop the rules of time call for: from when, and why."""

    at: datetime
    reason: str  # completes "stopped ...": "after 30 min without activity (threshold 30 min)"
    stop_reason: StopReason
    kept_alive: bool = False  # held until `at` by a keep-alive (busy_until)

    @property
    def because(self) -> str:
        """Why, for the people watching: a keep-alive that holds the stop is named, as
        activity does not move it then."""
        if self.kept_alive:
            return f"when its keep-alive ends at {self.at:%Y-%m-%d %H:%M} UTC, {self.reason}"
        return self.reason


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:.0f} min" if minutes >= 1 else f"{delta.total_seconds():.0f} s"


def viewer_has_left(
    *, last_seen_at: datetime | None, started_at: datetime | None, now: datetime, policy: Policy
) -> bool:
    """A viewer watched this run of the preview and none has been seen for a ping timeout."""
    if last_seen_at is None:
        return False
    watched_this_run = started_at is None or last_seen_at >= started_at
    return watched_this_run and now - last_seen_at >= policy.ping_timeout


def _never_stops(snapshot: Snapshot) -> str | None:
    """Why the rules keep this preview whatever the clock says, or None."""
    if snapshot.preview_state != PreviewState.RUNNING:
        return f"preview is {snapshot.preview_state}"
    if snapshot.kept:
        return "container labelled kosuke.keep=true"
    return None


def _max_age_at(snapshot: Snapshot, policy: Policy) -> datetime | None:
    """When the preview reaches the maximum age (None: no limit, or no start known)."""
    if policy.max_age and snapshot.started_at:
        return snapshot.started_at + policy.max_age
    return None


def _threshold(snapshot: Snapshot, policy: Policy) -> timedelta:
    """The session's own inactivity threshold, or the policy's."""
    return snapshot.idle_timeout or policy.threshold


def _inactive_at(snapshot: Snapshot, policy: Policy) -> datetime:
    """When the session has been quiet for its threshold."""
    return snapshot.last_activity_at + _threshold(snapshot, policy)


def _time_rule_stop(snapshot: Snapshot, now: datetime, policy: Policy) -> StopDue | None:
    """The stop the rules of time call for at `now` (the maximum age first, then
    inactivity), `at` when that rule began to apply; the "never" rules are the caller's."""
    max_age_at = _max_age_at(snapshot, policy)
    if max_age_at is not None and now >= max_age_at:
        return StopDue(
            max_age_at,
            f"after running {_minutes(now - snapshot.started_at)} "
            f"(maximum age {_minutes(policy.max_age)})",
            StopReason.MAX_AGE,
        )
    inactive_at = _inactive_at(snapshot, policy)
    if now >= inactive_at:
        return StopDue(
            inactive_at,
            f"after {_minutes(now - snapshot.last_activity_at)} without activity "
            f"(threshold {_minutes(_threshold(snapshot, policy))})",
            StopReason.INACTIVE,
        )
    return None


def decide(snapshot: Snapshot, now: datetime, policy: Policy) -> Decision:
    """Stop or keep, with the reason in words. The "never" rules come first."""
    level = activity_level(
        now - snapshot.last_activity_at,
        threshold=_threshold(snapshot, policy),
        viewer_left=viewer_has_left(
            last_seen_at=snapshot.last_seen_at,
            started_at=snapshot.started_at,
            now=now,
            policy=policy,
        ),
    )

    def keep(reason: str) -> Decision:
        return Decision(stop=False, reason=reason, level=level)

    def stop(reason: str, code: StopReason, due_at: datetime) -> Decision:
        return Decision(stop=True, reason=reason, level=level, stop_reason=code, due_at=due_at)

    never = _never_stops(snapshot)
    if never is not None:
        return keep(never)
    if snapshot.busy_until and snapshot.busy_until > now:
        return keep(f"kept alive until {snapshot.busy_until:%Y-%m-%d %H:%M} UTC")

    timed = _time_rule_stop(snapshot, now, policy)
    if timed is not None:
        # Due from when the rule applied, or from when a keep-alive that held it ended.
        due_at = max(timed.at, snapshot.busy_until) if snapshot.busy_until else timed.at
        return stop(f"stopped {timed.reason}", timed.stop_reason, due_at)
    quiet_for = now - snapshot.last_activity_at
    if level == ActivityLevel.DISCONNECTED:
        gone_for = now - snapshot.last_seen_at
        if gone_for >= policy.ping_timeout + policy.grace and quiet_for >= policy.grace:
            return stop(
                f"stopped {_minutes(gone_for)} after the last viewer left "
                f"(grace period {_minutes(policy.grace)})",
                StopReason.DISCONNECTED,
                max(
                    snapshot.last_seen_at + policy.ping_timeout + policy.grace,
                    snapshot.last_activity_at + policy.grace,
                ),
            )
        return keep(f"no viewer for {_minutes(gone_for)}; waiting for a reconnect")
    return keep(f"{level.value}: last activity {_minutes(quiet_for)} ago")


def stop_due(snapshot: Snapshot, policy: Policy) -> StopDue | None:
    """The moment from which `decide` says stop if nothing happens meanwhile (no activity,
    the keep-alive as it stands) and a viewer keeps watching, with its reason; None when
    the preview does not stop by itself (not running, or kept by label).

    The disconnected rule is left out: it applies only once every viewer has gone, which
    a viewer asking cannot foresee. A keep-alive postpones the stop to its end.
    """
    if _never_stops(snapshot) is not None:
        return None
    moments = (_inactive_at(snapshot, policy), _max_age_at(snapshot, policy))
    first_rule_at = min(moment for moment in moments if moment is not None)
    due = _time_rule_stop(snapshot, first_rule_at, policy)
    busy_until = snapshot.busy_until
    if busy_until is None or busy_until <= first_rule_at:
        return due
    # A keep-alive keeps while still ahead (`busy_until > now`): at its end it stops.
    return replace(_time_rule_stop(snapshot, busy_until, policy), at=busy_until, kept_alive=True)


def preview_stop_due(preview: Preview | None, *, kept: bool = False) -> StopDue | None:
    """`stop_due` of a preview (its session read with it) under the settings' policy;
    None without a preview. `kept`: every running container is labelled kosuke.keep=true."""
    if preview is None:
        return None
    return stop_due(Snapshot.of(preview, last_seen_at=None, kept=kept), Policy.from_settings())
