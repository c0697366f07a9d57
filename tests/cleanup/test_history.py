"""History retention: clean runs 7 days (newest 1000), runs with failures 14 days (5000)."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.utils import timezone

from cleanup.history import RETENTION, history_prune
from cleanup.models import CleanupRun

pytestmark = pytest.mark.django_db


def _run(age: td, *, failed: int = 0, finished: bool = True) -> CleanupRun:
    started = timezone.now() - age
    return CleanupRun.objects.create(
        trigger="beat",
        threshold_minutes=30,
        batch_size=100,
        started_at=started,
        finished_at=started if finished else None,
        failed=failed,
    )


def test_it_keeps_clean_runs_7_days_and_failed_runs_14_days():
    kept = [_run(td(days=6)), _run(td(days=13), failed=1), _run(td(days=30), finished=False)]
    _run(td(days=8))
    _run(td(days=15), failed=2)

    assert history_prune() == {"completed": 1, "failed": 1}
    assert set(CleanupRun.objects.values_list("pk", flat=True)) == {run.pk for run in kept}


def test_it_keeps_only_the_newest_clean_runs_beyond_the_count(monkeypatch):
    monkeypatch.setitem(RETENTION, "completed", (td(days=7), 3))
    runs = [_run(td(minutes=minutes)) for minutes in range(5)]

    history_prune()

    assert set(CleanupRun.objects.values_list("pk", flat=True)) == {r.pk for r in runs[:3]}
