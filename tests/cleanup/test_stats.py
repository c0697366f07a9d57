"""The statistics agree with counts made here from a seeded history, in a constant number
of queries however long the history."""

from __future__ import annotations

import math
import random
from datetime import timedelta as td

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cleanup.control import Actor, cleanup_pause
from cleanup.models import CleanupRun, StopDecision, StopRollup
from cleanup.rollups import LATE_BUCKET_EDGES
from cleanup.stats import cleanup_stats, stats_in_words, stats_series, window_parse
from previews.models import Preview, PreviewState, StopReason
from tests.builders import chat_session_create

Outcome = StopDecision.Outcome
NOW = timezone.now().replace(microsecond=0)


def _seed_history(count: int, *, seed: int = 7) -> list[StopDecision]:
    """`count` decisions over the last 10 days, of every reason and outcome; the stopped
    ones ran between 0 and 2 hours past their threshold."""
    rng = random.Random(seed)
    runs = CleanupRun.objects.bulk_create(
        CleanupRun(
            trigger="beat",
            threshold_minutes=30,
            batch_size=100,
            started_at=NOW - td(hours=hours),
            swept_at=NOW - td(hours=hours),
            paused=hours % 5 == 0,
        )
        for hours in range(0, 240, 3)
    )
    decisions = []
    for _ in range(count):
        run = rng.choice(runs)
        # Pending only in the last hours: older stops have settled (or were settled as lost).
        recent = run.started_at > NOW - td(hours=4)
        outcome = rng.choice([o for o in Outcome.values if recent or o != Outcome.PENDING])
        due_at = run.started_at - td(minutes=rng.randint(0, 5))
        late = td(seconds=rng.randint(0, 7200))
        decisions.append(
            StopDecision(
                run=run,
                project_id="p",
                session_id="s",
                stop_reason=rng.choice(
                    [StopReason.INACTIVE, StopReason.DISCONNECTED, StopReason.ORPHAN]
                ),
                reason="seeded",
                level="background",
                decided_at=run.started_at,
                due_at=due_at,
                outcome=outcome,
                settled_at=None if outcome == Outcome.PENDING else due_at + late,
            )
        )
    return StopDecision.objects.bulk_create(decisions)


def test_window_stats_agree_with_counts_made_independently(db):
    decisions = _seed_history(600)
    window = td(days=7)

    stats = cleanup_stats(window, now=NOW)

    assert StopRollup.objects.exists()  # the final hours were read from their rollups
    assert cleanup_stats(window, now=NOW) == stats  # and read again the same
    inside = [d for d in decisions if d.decided_at >= NOW - window]
    outcomes = [d.outcome for d in inside]
    assert stats["stops"]["by_outcome"] == {o: outcomes.count(o) for o in Outcome.values}
    for reason, by_outcome in stats["stops"]["by_reason"].items():
        for outcome, n in by_outcome.items():
            expected = [d for d in inside if (d.stop_reason, d.outcome) == (reason, outcome)]
            assert n == len(expected), (reason, outcome)
    failed, stopped = outcomes.count(Outcome.FAILED), outcomes.count(Outcome.STOPPED)
    assert stats["stops"]["failure_rate"] == round(failed / (failed + stopped), 4)
    late = sorted(
        (d.settled_at - d.due_at).total_seconds() for d in inside if d.outcome == Outcome.STOPPED
    )
    past = stats["stops"]["seconds_past_threshold"]
    assert past["stops"] == len(late)
    # Each percentile, rounded up to the edge of its bucket.
    for fraction, reported in ((0.5, past["median_within"]), (0.95, past["p95_within"])):
        true = late[math.ceil(fraction * len(late)) - 1]
        assert reported == min(edge for edge in LATE_BUCKET_EDGES if edge > true)
    assert stats["stops"]["idle_container_hours"] == pytest.approx(sum(late) / 3600, abs=0.001)
    orphans = [d for d in inside if (d.stop_reason, d.outcome) == ("orphan", "stopped")]
    assert stats["stops"]["orphans_removed"] == len(orphans)
    runs = CleanupRun.objects.filter(started_at__gte=NOW - window)
    assert stats["sweeps"]["run"] == runs.filter(paused=False).count()
    assert stats["sweeps"]["paused"] == runs.filter(paused=True).count()
    assert stats["stops_pending"] == StopDecision.objects.filter(outcome="pending").count()


def test_the_charts_series_agree_with_counts_made_independently(db):
    decisions = _seed_history(600)
    for n, run in enumerate(CleanupRun.objects.all()):
        CleanupRun.objects.filter(pk=run.pk).update(examined=n)
    window = td(days=7)

    series = stats_series(window, now=NOW)

    hours = {}
    for d in decisions:
        if NOW - window <= d.decided_at <= NOW:
            hour = d.decided_at.replace(minute=0, second=0, microsecond=0).timestamp()
            hours.setdefault(hour, {o: 0 for o in Outcome.values})[d.outcome] += 1
    stops = series["stops_per_hour"]
    assert stops["at"] == sorted(hours)
    for outcome in Outcome.values:
        assert stops[outcome] == [hours[at][outcome] for at in stops["at"]]
    live = {  # a run every 3 hours: each hour holds at most one
        run.started_at.replace(minute=0, second=0).timestamp(): run.examined
        for run in CleanupRun.objects.filter(started_at__gte=NOW - window, paused=False)
    }
    assert dict(zip(*series["live_previews"].values(), strict=True)) == live
    assert (series["from"], series["to"]) == ((NOW - window).timestamp(), NOW.timestamp())


def test_the_stops_of_pruned_runs_still_count(db):
    from cleanup.history import history_prune

    _seed_history(400)
    before = cleanup_stats(td(days=10), now=NOW)["stops"]

    deleted = history_prune(now=NOW)

    assert deleted["completed"] + deleted["failed"] > 0
    assert cleanup_stats(td(days=10), now=NOW)["stops"] == before


def test_an_hour_is_rolled_up_only_once_none_of_its_stops_is_pending(db):
    from cleanup.rollups import rollups_catch_up

    [old_pending] = _seed_history(1)
    StopDecision.objects.filter(pk=old_pending.pk).update(
        outcome=Outcome.PENDING, decided_at=NOW - td(days=2)
    )
    _seed_history(300, seed=3)

    final = rollups_catch_up(NOW)

    assert final == (NOW - td(days=2)).replace(minute=0, second=0)
    assert not StopRollup.objects.filter(hour__gte=final).exists()
    StopDecision.objects.filter(pk=old_pending.pk).update(outcome=Outcome.STOPPED)
    assert rollups_catch_up(NOW) > final


def test_previews_now_by_state_and_level(alice, settings):
    settings.CLEANUP_THRESHOLD_MINUTES = 30
    settings.PREVIEW_ENGINES = "a=unix:///a.sock?capacity=10,b=unix:///b.sock"
    ages = {"active": td(seconds=30), "idle": td(minutes=5), "background": td(minutes=40)}
    for name, age in ages.items():
        session = chat_session_create(alice, session_id=name, last_activity_at=NOW - age)
        Preview.objects.create(session=session, state=PreviewState.RUNNING, engine="a")
    # Past its threshold, but a keep-alive holds it: not overdue.
    held = chat_session_create(
        alice, session_id="held", last_activity_at=NOW - td(hours=2), busy_until=NOW + td(hours=1)
    )
    Preview.objects.create(session=held, state=PreviewState.RUNNING, engine="a")
    gone = chat_session_create(alice, session_id="gone")
    Preview.objects.create(session=gone, state=PreviewState.STOPPED, engine="a")
    cleanup_pause(Actor(name="ops"), reason="drill")

    stats = cleanup_stats(td(hours=24), now=NOW)

    previews = stats["previews"]
    assert previews["by_state"] == {
        "stopped": 1,
        "starting": 0,
        "running": 4,
        "stopping": 0,
        "failed": 0,
    }
    assert previews["running_by_level"] == {
        "active": 1,
        "idle": 1,
        "background": 2,
        "disconnected": 0,
    }
    assert (previews["overdue"], previews["overdue_hours"]) == (1, round(10 / 60, 3))
    engines = [(e["engine"], e["previews_running"], e["capacity"]) for e in stats["engines"]]
    assert engines == [("a", 4, 10), ("b", 0, settings.PREVIEW_ENGINE_CAPACITY)]
    assert not any(engine["reachable"] for engine in stats["engines"])  # none reported
    assert stats["paused"]["reason"] == "drill"
    words = "\n".join(stats_in_words(stats))
    assert "cleanup: paused by ops: drill" in words and "running 4" in words
    assert "and 4 preview(s) running of 10 capacity" in words


def test_the_number_of_queries_does_not_grow_with_the_history(db):
    def queries() -> int:
        cleanup_stats(td(days=7), now=NOW)  # rolls up the final hours
        with CaptureQueriesContext(connection) as captured:
            cleanup_stats(td(days=7), now=NOW)
        return len(captured)

    _seed_history(10, seed=1)
    few = queries()
    _seed_history(2000, seed=2)
    StopRollup.objects.all().delete()  # roll the longer history up again

    assert queries() == few


@pytest.mark.parametrize("text", ["", "24", "5m", "0h", "31d", "721h", "1.5h", "-1d", "7 d"])
def test_a_window_is_whole_hours_or_days_up_to_30_days(text):
    with pytest.raises(ValueError, match="window"):
        window_parse(text)


def test_windows_people_write():
    assert window_parse("24h") == td(hours=24)
    assert window_parse("7d") == td(days=7)
    assert window_parse("30d") == td(days=30)
