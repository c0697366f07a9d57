"""History retention: clean runs 7 days (newest 1000), runs with failures 14 days (5000)."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.utils import timezone

from cleanup.history import RETENTION, history_prune
from cleanup.models import CleanupRun, StopDecision
from tests.builders import stop_decisions_create

pytestmark = pytest.mark.django_db
Outcome = StopDecision.Outcome


def _run(
    age: td, *, found: int = 1, failed: int = 0, errors=(), finished: bool = True
) -> CleanupRun:
    """A run that found `found` previews to stop, `failed` of whose stops failed; an
    unfinished one still has a stop pending."""
    started = timezone.now() - age
    run = CleanupRun.objects.create(
        trigger="beat",
        threshold_minutes=30,
        batch_size=100,
        started_at=started,
        swept_at=started,
        sweep_errors=list(errors),
    )
    outcomes = [Outcome.FAILED] * failed + ([] if finished else [Outcome.PENDING])
    outcomes += [Outcome.STOPPED] * (found - len(outcomes))
    stop_decisions_create(run, outcomes)
    return run


def test_it_keeps_clean_runs_7_days_and_failed_runs_14_days():
    engine_error = [{"engine": "unix:///x", "error": "unreachable"}]
    kept = [
        _run(td(days=6)),
        _run(td(days=13), failed=1),
        _run(td(days=13), found=0, errors=engine_error),
        _run(td(hours=20), finished=False),
    ]
    _run(td(days=8))
    _run(td(days=15), failed=2)

    assert history_prune() == {"idle": 0, "completed": 1, "failed": 1, "rollups": 0}
    assert set(CleanupRun.objects.values_list("pk", flat=True)) == {run.pk for run in kept}


def test_it_keeps_only_the_newest_clean_runs_beyond_the_count(monkeypatch):
    monkeypatch.setitem(RETENTION, "completed", (td(days=7), 3))
    runs = [_run(td(minutes=minutes)) for minutes in range(5)]

    history_prune()

    assert set(CleanupRun.objects.values_list("pk", flat=True)) == {r.pk for r in runs[:3]}


def test_runs_that_found_nothing_go_after_a_day_and_never_push_out_real_history(monkeypatch):
    monkeypatch.setitem(RETENTION, "idle", (td(days=1), 2))
    stopped_something = _run(td(hours=17))
    idle = [_run(td(minutes=minutes), found=0) for minutes in range(3)]
    _run(td(hours=25), found=0)

    history_prune()

    remaining = set(CleanupRun.objects.values_list("pk", flat=True))
    assert remaining == {stopped_something.pk, idle[0].pk, idle[1].pk}


def test_a_run_that_never_finished_counts_as_failed_after_a_day():
    running = _run(td(hours=2), finished=False)
    crashed = _run(td(days=2), finished=False)
    crashed_long_ago = _run(td(days=15), finished=False)

    assert history_prune()["failed"] == 1

    remaining = set(CleanupRun.objects.values_list("pk", flat=True))
    assert remaining == {running.pk, crashed.pk}
    assert crashed_long_ago.pk not in remaining
