"""The decision rules, as a table and as properties that must hold for any input."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from datetime import timedelta as td

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup.decisions import Policy, Snapshot, decide, stop_due

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


MAX_AGE_POLICY = replace(POLICY, max_age=td(hours=8))
STOP_DUE = [
    # (snapshot, policy, stops_at, stop reason, its words)
    (
        running(last_activity_at=NOW - td(minutes=10)),
        POLICY,
        NOW + td(minutes=20),
        "inactive",
        "after 30 min without activity (threshold 30 min)",
    ),
    (
        running(last_activity_at=NOW - td(minutes=10), idle_timeout=td(minutes=60)),
        POLICY,
        NOW + td(minutes=50),
        "inactive",
        "after 60 min without activity (threshold 60 min)",
    ),
    (
        # Overdue already: due since the threshold passed, the next sweep stops it.
        running(last_activity_at=NOW - td(hours=3)),
        POLICY,
        NOW - td(minutes=150),
        "inactive",
        "after 30 min without activity (threshold 30 min)",
    ),
    (
        # A keep-alive postpones the stop to its end, not by a threshold after it.
        running(last_activity_at=NOW - td(hours=3), busy_until=NOW + td(minutes=7)),
        POLICY,
        NOW + td(minutes=7),
        "inactive",
        "after 187 min without activity (threshold 30 min)",
    ),
    (
        # A keep-alive ending before the threshold changes nothing.
        running(last_activity_at=NOW, busy_until=NOW + td(minutes=7)),
        POLICY,
        NOW + td(minutes=30),
        "inactive",
        "after 30 min without activity (threshold 30 min)",
    ),
    (
        running(last_activity_at=NOW, started_at=NOW - td(hours=7, minutes=50)),
        MAX_AGE_POLICY,
        NOW + td(minutes=10),
        "max_age",
        "after running 480 min (maximum age 480 min)",
    ),
    (
        running(last_activity_at=NOW - td(minutes=25), started_at=NOW - td(hours=1)),
        MAX_AGE_POLICY,
        NOW + td(minutes=5),
        "inactive",
        "after 30 min without activity (threshold 30 min)",
    ),
    (
        # A viewer who left is the disconnected rule's business: not foreseen here.
        running(
            last_activity_at=NOW - td(minutes=5),
            started_at=NOW - td(minutes=20),
            last_seen_at=NOW - td(minutes=3),
        ),
        POLICY,
        NOW + td(minutes=25),
        "inactive",
        "after 30 min without activity (threshold 30 min)",
    ),
]


@pytest.mark.parametrize(("snapshot", "policy", "stops_at", "code", "words"), STOP_DUE)
def test_stop_due_says_when_decide_starts_to_stop_and_why(snapshot, policy, stops_at, code, words):
    due = stop_due(snapshot, policy)

    assert (due.at, due.stop_reason, due.reason) == (stops_at, code, words)
    watched = replace(snapshot, last_seen_at=None)  # a viewer keeps watching
    before = decide(watched, due.at - td(seconds=1), policy)
    at, after = decide(watched, due.at, policy), decide(watched, due.at + td(seconds=1), policy)
    assert not before.stop
    assert (at.stop, at.stop_reason, at.reason) == (True, code, f"stopped {words}")
    assert (after.stop, after.stop_reason) == (True, code)


@pytest.mark.parametrize(
    "snapshot",
    [
        Snapshot(preview_state="stopped", last_activity_at=NOW - td(hours=3)),
        Snapshot(preview_state="starting", last_activity_at=NOW - td(hours=3)),
        running(last_activity_at=NOW - td(hours=3), kept=True),
    ],
)
def test_stop_due_is_none_for_a_preview_that_does_not_stop_by_itself(snapshot):
    assert stop_due(snapshot, POLICY) is None


@st.composite
def running_snapshots(draw) -> Snapshot:
    """Running previews whose moments lie within days of each other, so that a keep-alive,
    the threshold and the maximum age often overtake one another."""
    base = draw(moments)
    near = st.timedeltas(min_value=-td(days=2), max_value=td(days=2)).map(lambda d: base + d)
    return Snapshot(
        preview_state="running",
        last_activity_at=base,
        idle_timeout=draw(st.none() | st.timedeltas(min_value=td(minutes=1), max_value=td(days=1))),
        busy_until=draw(st.none() | near),
        started_at=draw(st.none() | near),
    )


@given(snapshots | running_snapshots(), policies)
def test_stop_due_agrees_with_decide_to_the_microsecond(snapshot, policy):
    # A viewer keeps watching: seen at every moment decided.
    def decided(moment: datetime):
        return decide(replace(snapshot, last_seen_at=moment), moment, policy)

    due = stop_due(snapshot, policy)
    if due is None:
        assert not decided(snapshot.last_activity_at + td(days=30)).stop
        return
    assert not decided(due.at - td(microseconds=1)).stop
    at = decided(due.at)
    assert (at.stop, at.stop_reason, at.reason) == (True, due.stop_reason, f"stopped {due.reason}")


def test_a_stop_for_inactivity_is_never_labelled_active_or_idle():
    # A session's own threshold of 1 minute is shorter than the 2- and 10-minute bands.
    snapshot = running(last_activity_at=NOW - td(seconds=90), idle_timeout=td(minutes=1))

    decision = decide(snapshot, NOW, POLICY)

    assert decision.stop and decision.reason.startswith("stopped after 2 min without activity")
    assert decision.level == "background"
