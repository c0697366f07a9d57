"""How long cleanup history is kept, after the source queue's retention of finished jobs:
runs that went well for 7 days (at most the newest 1000), runs with failures for 14 days
(at most the newest 5000). Stop decisions go with their run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from cleanup.models import CleanupRun

RETENTION = {
    # kind: (age, newest count kept)
    "completed": (timedelta(days=7), 1000),
    "failed": (timedelta(days=14), 5000),
}


def _expired(runs: QuerySet[CleanupRun], age: timedelta, keep: int, now: datetime) -> list[int]:
    newest = runs.order_by("-started_at").values_list("pk", flat=True)
    beyond_count = list(newest[keep:])
    too_old = list(runs.filter(started_at__lt=now - age).values_list("pk", flat=True))
    return sorted(set(beyond_count) | set(too_old))


def history_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete finished runs past their retention; returns how many of each kind went."""
    now = now or timezone.now()
    finished = CleanupRun.objects.filter(finished_at__isnull=False)
    kinds = {"completed": finished.filter(failed=0), "failed": finished.filter(failed__gt=0)}
    deleted = {}
    for kind, runs in kinds.items():
        age, keep = RETENTION[kind]
        expired = _expired(runs, age, keep, now)
        CleanupRun.objects.filter(pk__in=expired).delete()
        deleted[kind] = len(expired)
    return deleted
