"""How long cleanup history is kept, after the source queue's retention of finished jobs:
runs that stopped something and went well for 7 days (at most the newest 1000), runs with
failures for 14 days (at most the newest 5000). Runs that found nothing to do (most beat
sweeps) are kept 1 day, outside those caps, so they never push real history out. A run
that never finished (its sweep crashed) counts as failed once a day old.
Stop decisions go with their run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from cleanup.models import CleanupRun
from cleanup.rollups import rollups_catch_up, rollups_prune

RETENTION = {
    # kind: (age, newest count kept)
    "idle": (timedelta(days=1), 24 * 60 * 2),
    "completed": (timedelta(days=7), 1000),
    "failed": (timedelta(days=14), 5000),
}


def _expired(runs: QuerySet[CleanupRun], age: timedelta, keep: int, now: datetime) -> list[int]:
    newest = runs.order_by("-started_at").values_list("pk", flat=True)
    beyond_count = list(newest[keep:])
    too_old = list(runs.filter(started_at__lt=now - age).values_list("pk", flat=True))
    return sorted(set(beyond_count) | set(too_old))


def history_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete finished runs past their retention; returns how many of each kind went.
    The statistics' hourly rollups are brought up to date first, so they keep counting
    the stops whose runs go (cleanup.rollups)."""
    now = now or timezone.now()
    rollups_catch_up(now)
    crashed = CleanupRun.objects.unfinished().filter(started_at__lt=now - timedelta(days=1))
    clean = CleanupRun.objects.finished().without_failures()
    kinds = {
        "idle": clean.found_nothing(),
        "completed": clean.found_something(),
        "failed": CleanupRun.objects.finished().with_failures() | crashed,
    }
    deleted = {}
    for kind, runs in kinds.items():
        age, keep = RETENTION[kind]
        expired = _expired(runs, age, keep, now)
        CleanupRun.objects.filter(pk__in=expired).delete()
        deleted[kind] = len(expired)
    deleted["rollups"] = rollups_prune(now)
    return deleted
