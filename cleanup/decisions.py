"""The decision rules: should this preview stop now, and why. Pure: no I/O, no clock.

`decide(snapshot, now, policy)` is the only place the rules live; the sweep calls it for
every running preview and the stop task calls it again just before stopping.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def decide(snapshot: Snapshot, now: datetime, policy: Policy) -> Decision:
    """Stop or keep, with the reason in words. The "never" rules come first."""
    level = activity_level(
        now - snapshot.last_activity_at,
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

    if snapshot.preview_state != PreviewState.RUNNING:
        return keep(f"preview is {snapshot.preview_state}")
    if snapshot.kept:
        return keep("container labelled kosuke.keep=true")
    if snapshot.busy_until and snapshot.busy_until > now:
        return keep(f"kept alive until {snapshot.busy_until:%Y-%m-%d %H:%M} UTC")

    if policy.max_age and snapshot.started_at and now - snapshot.started_at >= policy.max_age:
        return stop(
            f"stopped after running {_minutes(now - snapshot.started_at)} "
            f"(maximum age {_minutes(policy.max_age)})",
            StopReason.MAX_AGE,
            snapshot.started_at + policy.max_age,
        )
    threshold = snapshot.idle_timeout or policy.threshold
    quiet_for = now - snapshot.last_activity_at
    if quiet_for >= threshold:
        return stop(
            f"stopped after {_minutes(quiet_for)} without activity "
            f"(threshold {_minutes(threshold)})",
            StopReason.INACTIVE,
            snapshot.last_activity_at + threshold,
        )
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
