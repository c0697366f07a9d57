"""Stop decisions counted by hour, reason, outcome and time past the threshold: the
statistics' one grouping of decisions, read from the decisions themselves for the hours
that may still change and from hourly rollups (StopRollup) for the final ones.

An hour is final once none of its decisions can change: older than the cutoff after
which a pending stop counts as lost, and older than every decision still pending. Rollups
are written once per hour (the hourly history task, or the first statistics read that
finds them behind); two writers of one hour write the same rows, and the second's go.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from cleanup.handout import pending_lost_after
from cleanup.models import StopDecision, StopRollup

HOUR = timedelta(hours=1)
# Lower edges, in seconds, of the buckets of time past the threshold when stopped. A
# percentile is reported as the upper edge of its bucket ("95 % stopped within 30 s").
LATE_BUCKET_EDGES = (
    0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900,
    1200, 1800, 2700, 3600, 5400, 7200, 10800, 14400, 21600, 43200, 86400,
)  # fmt: skip
ROLLUPS_KEPT = timedelta(days=31)
ROLLUP_LOCK = 0x6B6F73756B65  # the advisory lock of the rollup writer ("kosuke")

_LATE = "GREATEST(0, EXTRACT(EPOCH FROM settled_at - due_at))"
_STOPPED = "outcome = 'stopped' AND due_at IS NOT NULL"
# Fixed SQL fragments only: every value is a query parameter.
_GROUPS = f"""
    SELECT date_trunc('hour', decided_at) AS hour, stop_reason, outcome,
           CASE WHEN {_STOPPED} THEN width_bucket({_LATE}, %(edges)s::float8[]) END AS late_bucket,
           count(*) AS decisions,
           COALESCE(sum(CASE WHEN {_STOPPED} THEN {_LATE} END), 0) AS late_seconds
    FROM cleanup_stopdecision
    WHERE {{where}}
    GROUP BY 1, 2, 3, 4
"""


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def final_before(now: datetime) -> datetime:
    """Hours before this one are final."""
    cutoff = now - pending_lost_after()
    oldest_pending = (
        StopDecision.objects.filter(outcome=StopDecision.Outcome.PENDING)
        .order_by("decided_at")
        .values_list("decided_at", flat=True)
        .first()
    )
    return _floor_hour(min(cutoff, oldest_pending) if oldest_pending else cutoff)


def _first_hour_to_roll_up(now: datetime) -> datetime:
    latest = StopRollup.objects.order_by("-hour").values_list("hour", flat=True).first()
    return latest + HOUR if latest else now - ROLLUPS_KEPT


def rollups_catch_up(now: datetime | None = None) -> datetime:
    """Roll up every final hour not rolled up yet; returns where the final hours end."""
    now = now or timezone.now()
    until = final_before(now)
    if _first_hour_to_roll_up(now) >= until:
        return until
    # One writer at a time: the others wait, then find these hours rolled up.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK])
        start = _first_hour_to_roll_up(now)
        where = "decided_at >= %(start)s AND decided_at < %(until)s"
        if start < until:
            cursor.execute(
                f"""
                INSERT INTO cleanup_stoprollup
                    (hour, stop_reason, outcome, late_bucket, decisions, late_seconds)
                {_GROUPS.format(where=where)}
                ON CONFLICT ON CONSTRAINT stop_rollup_unique DO NOTHING
                """,
                {"edges": list(LATE_BUCKET_EDGES), "start": start, "until": until},
            )
    return until


def rollups_prune(now: datetime | None = None) -> int:
    deleted, _ = StopRollup.objects.filter(hour__lt=(now or timezone.now()) - ROLLUPS_KEPT).delete()
    return deleted


def decision_groups(
    since: datetime, now: datetime
) -> list[tuple[str, str, int | None, int, float]]:
    """(reason, outcome, late bucket, decisions, seconds past the threshold) of the
    decisions made in [since, now]: the final whole hours from the rollups, the rest from
    the decisions (at most the first partial hour and the last ones not final)."""
    final = rollups_catch_up(now)
    first_whole = _floor_hour(since) + (HOUR if since != _floor_hour(since) else timedelta(0))
    rolled_until = max(first_whole, min(final, _floor_hour(now)))
    where = (
        "(decided_at >= %(since)s AND decided_at < %(first_whole)s)"
        " OR (decided_at >= %(rolled_until)s AND decided_at <= %(now)s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT stop_reason, outcome, late_bucket, sum(decisions)::bigint, sum(late_seconds)
            FROM (
                SELECT stop_reason, outcome, late_bucket, decisions, late_seconds
                FROM cleanup_stoprollup
                WHERE hour >= %(first_whole)s AND hour < %(rolled_until)s
                UNION ALL
                SELECT stop_reason, outcome, late_bucket, decisions, late_seconds
                FROM ({_GROUPS.format(where=where)}) AS recent
            ) AS groups
            GROUP BY 1, 2, 3
            """,
            {
                "edges": list(LATE_BUCKET_EDGES),
                "since": since,
                "first_whole": first_whole,
                "rolled_until": rolled_until,
                "now": now,
            },
        )
        return cursor.fetchall()


def decisions_per_hour(since: datetime, now: datetime) -> list[tuple[datetime, str, int]]:
    """(hour, outcome, decisions) of the decisions made in [since, now], oldest first:
    the final hours from the rollups, the rest from the decisions."""
    final = max(_floor_hour(since), rollups_catch_up(now))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT hour, outcome, sum(decisions)::bigint
            FROM (
                SELECT hour, outcome, decisions
                FROM cleanup_stoprollup
                WHERE hour >= %(since_hour)s AND hour < %(final)s
                UNION ALL
                SELECT date_trunc('hour', decided_at), outcome, count(*)
                FROM cleanup_stopdecision
                WHERE decided_at >= %(final)s AND decided_at <= %(now)s
                GROUP BY 1, 2
            ) AS hours
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
            {"since_hour": _floor_hour(since), "final": final, "now": now},
        )
        return cursor.fetchall()
