"""The decision rules, as a table and as properties that must hold for any input."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from datetime import timedelta as td

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup.decisions import Policy, Snapshot, decide

NOW = datetime(2026, 11, 25, 14, 2, tzinfo=UTC)
POLICY = Policy(
    threshold=td(minutes=30), grace=td(seconds=30), ping_timeout=td(seconds=60), max_age=None
)


def running(**fields) -> Snapshot:
    return Snapshot(preview_state="running", **{"last_activity_at": NOW, **fields})


TABLE = [
    # (snapshot, policy, stop?, stop reason, level, words in the reason)
    (running(), POLICY, False, None, "active", "last activity 0 s ago"),
    (running(last_activity_at=NOW - td(minutes=5)), POLICY, False, None, "idle", "idle"),
    (running(last_activity_at=NOW - td(minutes=29)), POLICY, False, None, "background", "29 min"),
    (
        running(last_activity_at=NOW - td(minutes=30)),
        POLICY,
        True,
        "inactive",
        "background",
        "stopped after 30 min without activity (threshold 30 min)",
    ),
    (
        running(last_activity_at=NOW - td(minutes=12), idle_timeout=td(minutes=10)),
        POLICY,
        True,
        "inactive",
        "background",
        "threshold 10 min",
    ),
    (
        running(last_activity_at=NOW - td(minutes=45), idle_timeout=td(minutes=60)),
        POLICY,
        False,
        None,
        "background",
        "45 min",
    ),
    (
        running(last_activity_at=NOW - td(hours=3), last_seen_at=NOW),
        POLICY,
        True,
        "inactive",
        "background",
        "without activity",
    ),
    (
        running(last_activity_at=NOW - td(hours=3)),
        POLICY,
        True,
        "inactive",
        "background",
        "180 min",
    ),
    (
        Snapshot(preview_state="starting", last_activity_at=NOW - td(hours=3)),
        POLICY,
        False,
        None,
        "background",
        "preview is starting",
    ),
    (
        Snapshot(preview_state="stopping", last_activity_at=NOW - td(hours=3)),
        POLICY,
        False,
        None,
        "background",
        "preview is stopping",
    ),
    (
        running(last_activity_at=NOW - td(hours=3), busy_until=NOW + td(minutes=1)),
        POLICY,
        False,
        None,
        "background",
        "kept alive until 2026-11-25 14:03 UTC",
    ),
    (
        running(last_activity_at=NOW - td(hours=3), busy_until=NOW - td(minutes=1)),
        POLICY,
        True,
        "inactive",
        "background",
        "without activity",
    ),
    (
        running(last_activity_at=NOW - td(hours=3), kept=True),
        POLICY,
        False,
        None,
        "background",
        "kosuke.keep=true",
    ),
    (
        running(
            last_activity_at=NOW - td(minutes=5),
            started_at=NOW - td(minutes=20),
            last_seen_at=NOW - td(seconds=95),
        ),
        POLICY,
        True,
        "disconnected",
        "disconnected",
        "after the last viewer left (grace period 30 s)",
    ),
    (
        running(
            last_activity_at=NOW - td(minutes=5),
            started_at=NOW - td(minutes=20),
            last_seen_at=NOW - td(seconds=70),
        ),
        POLICY,
        False,
        None,
        "disconnected",
        "waiting for a reconnect",
    ),
    (
        # The last viewer left before this run of the preview started: presence says
        # nothing about this run, so only the inactivity threshold applies.
        running(
            last_activity_at=NOW - td(minutes=5),
            started_at=NOW - td(minutes=6),
            last_seen_at=NOW - td(minutes=8),
        ),
        POLICY,
        False,
        None,
        "idle",
        "idle",
    ),
    (
        running(started_at=NOW - td(hours=9)),
        Policy(
            threshold=td(minutes=30),
            grace=td(seconds=30),
            ping_timeout=td(seconds=60),
            max_age=td(hours=8),
        ),
        True,
        "max_age",
        "active",
        "maximum age 480 min",
    ),
]


@pytest.mark.parametrize(("snapshot", "policy", "stop", "code", "level", "words"), TABLE)
def test_the_rules_decide_with_a_reason(snapshot, policy, stop, code, level, words):
    decision = decide(snapshot, NOW, policy)

    assert (decision.stop, decision.stop_reason, decision.level) == (stop, code, level)
    assert words in decision.reason


moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=td(0), max_value=td(days=2))
snapshots = st.builds(
    Snapshot,
    preview_state=st.sampled_from(["stopped", "starting", "running", "stopping", "failed"]),
    last_activity_at=moments,
    idle_timeout=st.none() | st.timedeltas(min_value=td(minutes=1), max_value=td(days=1)),
    busy_until=st.none() | moments,
    started_at=st.none() | moments,
    last_seen_at=st.none() | moments,
    kept=st.booleans(),
)
policies = st.builds(
    Policy,
    threshold=st.timedeltas(min_value=td(minutes=1), max_value=td(days=1)),
    grace=st.timedeltas(min_value=td(0), max_value=td(minutes=10)),
    ping_timeout=st.timedeltas(min_value=td(seconds=10), max_value=td(minutes=10)),
    max_age=st.none() | st.timedeltas(min_value=td(minutes=1), max_value=td(days=2)),
)


@given(snapshots, moments, policies)
def test_activity_newer_than_the_threshold_and_the_grace_period_never_stops(snapshot, now, policy):
    newest_allowed = min(snapshot.idle_timeout or policy.threshold, policy.grace)
    if now - snapshot.last_activity_at < newest_allowed and policy.max_age is None:
        assert not decide(snapshot, now, policy).stop


@given(snapshots, moments, policies)
def test_without_presence_only_the_threshold_or_max_age_stop(snapshot, now, policy):
    decision = decide(replace(snapshot, last_seen_at=None), now, policy)
    assert decision.stop_reason in (None, "inactive", "max_age")


@given(snapshots, moments, policies)
def test_the_never_rules_hold(snapshot, now, policy):
    decision = decide(snapshot, now, policy)
    if snapshot.preview_state != "running" or snapshot.kept:
        assert not decision.stop
    if snapshot.busy_until and snapshot.busy_until > now:
        assert not decision.stop


@given(snapshots, moments, policies)
def test_every_stop_has_a_reason(snapshot, now, policy):
    decision = decide(snapshot, now, policy)
    assert decision.reason
    assert (decision.stop_reason is not None) == decision.stop


@given(snapshots, moments, durations, policies)
def test_a_preview_due_to_stop_stays_due_as_time_passes(snapshot, now, later, policy):
    # Unless a keep-alive still runs at `now`, waiting never makes a stop go away.
    if decide(snapshot, now, policy).stop:
        assert decide(snapshot, now + later, policy).stop
