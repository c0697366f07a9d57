"""Cleanup statistics: the one selector the operator API, `/metrics`, the admin and
`cleanup_previews --stats` share.

`stats_now` is the state of things (previews by state and activity level, engines,
pending stops, pause, the last sweep and the next one due); `stats_window` is what the
cleanup did in a window (stops by reason and outcome, failure rate, time from crossing
the threshold to stopped, idle container-hours, sweeps). A constant number of queries:
the cost follows the live previews and the hours in the window (cleanup.rollups), not
the number of decisions.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import accumulate

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from chat.models import ActivityLevel, activity_level
from chat.presence import sessions_last_seen
from cleanup.control import Pause, pause_state
from cleanup.decisions import Policy, Snapshot, stop_due, viewer_has_left
from cleanup.metrics import sweeps_skipped_since
from cleanup.models import CleanupRun, StopDecision
from cleanup.rollups import LATE_BUCKET_EDGES, decision_groups, decisions_per_hour
from kosuke.health import engine_report_fresh, engine_reports
from previews.engines import engines
from previews.models import Preview, PreviewState, StopReason

logger = logging.getLogger(__name__)
MAX_WINDOW = timedelta(days=30)
_WINDOW = re.compile(r"(\d{1,4})([hd])")


def window_parse(text: str) -> timedelta:
    """'24h' or '7d' (any whole number of hours or days up to 30 days)."""
    match = _WINDOW.fullmatch(text.strip())
    if not match:
        raise ValueError(f"window {text!r}: expected hours or days such as 24h or 7d")
    number, unit = int(match[1]), match[2]
    window = timedelta(hours=number) if unit == "h" else timedelta(days=number)
    if not timedelta(hours=1) <= window <= MAX_WINDOW:
        raise ValueError(f"window {text!r}: must be between 1h and 30d")
    return window


def cleanup_stats(window: timedelta, *, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    return {**stats_now(now=now), **stats_window(window, now=now)}


def stats_now(*, now: datetime | None = None) -> dict:
    """Previews by state and level, engines, pending stops, pause, last and next sweep."""
    now = now or timezone.now()
    by_state = dict.fromkeys(PreviewState.values, 0)
    by_state |= dict(Preview.objects.values_list("state").annotate(n=Count("*")).order_by())
    running = _running_previews(now)
    pause = pause_state(now)
    last = CleanupRun.objects.order_by("-started_at").first()
    return {
        "now": now,
        "previews": {
            "by_state": by_state,
            "running_by_level": running["by_level"],
            "overdue": running["overdue"],
            "overdue_hours": round(running["overdue_seconds"] / 3600, 3),
        },
        "engines": _engines(running["by_engine"]),
        "stops_pending": StopDecision.objects.filter(outcome=StopDecision.Outcome.PENDING).count(),
        "paused": pause.as_dict() if pause else None,
        "last_sweep": _sweep_brief(last),
        "next_sweep_due_at": _next_sweep_due(now),
    }


def _running_previews(now: datetime) -> dict:
    """Running previews by activity level and by engine, and how far past their stop the
    overdue ones are (the rules' own moment: the threshold, the maximum age, or the end of
    a keep-alive): one query over the live previews, one Redis round trip."""
    policy = Policy.from_settings()
    rows = list(
        Preview.objects.filter(state=PreviewState.RUNNING).values_list(
            "session_id",
            "engine",
            "started_at",
            "session__last_activity_at",
            "session__idle_timeout_minutes",
            "session__busy_until",
        )
    )
    try:
        last_seen = sessions_last_seen(row[0] for row in rows)
    except redis.RedisError as exc:  # the levels lose "disconnected", nothing else
        logger.warning("statistics: presence unavailable: %s", exc)
        last_seen = defaultdict(lambda: None)
    by_level = dict.fromkeys(ActivityLevel.values, 0)
    by_engine: Counter[str] = Counter()
    overdue, overdue_seconds = 0, 0.0
    for session_pk, engine, started_at, last_activity_at, idle_minutes, busy_until in rows:
        left = viewer_has_left(
            last_seen_at=last_seen[session_pk], started_at=started_at, now=now, policy=policy
        )
        threshold = timedelta(minutes=idle_minutes) if idle_minutes else policy.threshold
        by_level[activity_level(now - last_activity_at, threshold=threshold, viewer_left=left)] += 1
        by_engine[engine] += 1
        due = stop_due(
            Snapshot(
                preview_state=PreviewState.RUNNING,
                last_activity_at=last_activity_at,
                idle_timeout=threshold,
                busy_until=busy_until,
                started_at=started_at,
            ),
            policy,
        )
        past = (now - due.at).total_seconds()
        if past > 0:
            overdue, overdue_seconds = overdue + 1, overdue_seconds + past
    return {
        "by_level": by_level,
        "by_engine": by_engine,
        "overdue": overdue,
        "overdue_seconds": overdue_seconds,
    }


def _engines(running_by_engine: Counter[str]) -> list[dict]:
    """Each engine configured or named by a preview not stopped: reachable (a worker of it
    answered lately), containers it runs (as last listed), previews the database says run
    there and how many it may run (None: not in PREVIEW_ENGINES). Reports on engines
    neither configured nor named any more (renamed, taken out) are left out."""
    try:
        reports = engine_reports()
    except redis.RedisError as exc:
        logger.warning("statistics: engine reports unavailable: %s", exc)
        reports = {}
    configured = engines()
    named = set(running_by_engine) - {""}
    engines_seen = [*configured, *sorted(named - set(configured))]
    rows = []
    for name in engines_seen:
        report = reports.get(name, {})
        at = report.get("at")
        fresh = engine_report_fresh(report)
        config = configured.get(name)
        rows.append(
            {
                "engine": name,
                "reachable": bool(fresh and report.get("ok")),
                "error": report.get("error") or ("" if fresh else "no fresh report"),
                "reported_at": datetime.fromtimestamp(at, tz=UTC) if at else None,
                "containers_running": report.get("running"),
                "previews_running": running_by_engine.get(name, 0),
                "capacity": config.capacity if config else None,
            }
        )
    return rows


def _sweep_brief(run: CleanupRun | None) -> dict | None:
    if run is None:
        return None
    fields = ("trigger", "started_at", "swept_at", "examined", "duration_ms", "paused", "note")
    return {"run": run.pk, **{name: getattr(run, name) for name in fields}}


def _next_sweep_due(now: datetime) -> datetime | None:
    """One interval after beat's last sweep (None when beat schedules none)."""
    if not settings.WORKER_ENABLED:
        return None
    last_beat = (
        CleanupRun.objects.filter(trigger=CleanupRun.Trigger.BEAT)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    if last_beat is None:
        return now
    return max(now, last_beat + timedelta(seconds=settings.CLEANUP_INTERVAL_SECONDS))


def stats_window(window: timedelta, *, now: datetime | None = None) -> dict:
    """What cleanup did in the `window` before `now`."""
    now = now or timezone.now()
    since = now - window
    by_reason: dict[str, dict[str, int]] = {}
    by_outcome = dict.fromkeys(StopDecision.Outcome.values, 0)
    late_histogram: Counter[int] = Counter()
    late_total = 0.0
    for reason, outcome, late_bucket, n, late_seconds in decision_groups(since, now):
        by_reason.setdefault(reason, dict.fromkeys(StopDecision.Outcome.values, 0))[outcome] += n
        by_outcome[outcome] += n
        if late_bucket is not None:
            late_histogram[late_bucket] += n
            late_total += late_seconds
    settled = by_outcome[StopDecision.Outcome.STOPPED] + by_outcome[StopDecision.Outcome.FAILED]
    sweeps = CleanupRun.objects.filter(started_at__gte=since, started_at__lte=now).aggregate(
        run=Count("pk", filter=Q(paused=False)), paused=Count("pk", filter=Q(paused=True))
    )
    return {
        "window": {"from": since, "to": now, "hours": window.total_seconds() / 3600},
        "stops": {
            "by_reason": by_reason,
            "by_outcome": by_outcome,
            "failure_rate": round(by_outcome[StopDecision.Outcome.FAILED] / settled, 4)
            if settled
            else None,
            # Upper edges of the buckets holding the median and the 95th percentile.
            "seconds_past_threshold": {
                "median_within": _percentile(late_histogram, 0.5),
                "p95_within": _percentile(late_histogram, 0.95),
                "stops": sum(late_histogram.values()),
            },
            "orphans_removed": by_reason.get(StopReason.ORPHAN, {}).get(
                StopDecision.Outcome.STOPPED, 0
            ),
            # Containers of previews stopped for longer than PREVIEW_RETENTION_HOURS.
            "retention_removed": by_reason.get(StopReason.RETENTION, {}).get(
                StopDecision.Outcome.STOPPED, 0
            ),
            "idle_container_hours": round(late_total / 3600, 3),
        },
        "sweeps": {**sweeps, "skipped": sweeps_skipped_since(since)},
    }


def stats_series(window: timedelta, *, now: datetime | None = None) -> dict:
    """What the dashboard charts: the live previews over time (the most a sweep examined
    in each step: 5 min over a day or less, an hour beyond) and stops per hour by outcome."""
    now = now or timezone.now()
    since = now - window
    step = timedelta(minutes=5) if window <= timedelta(days=1) else timedelta(hours=1)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT date_bin(%(step)s, started_at, %(origin)s), max(examined)
            FROM cleanup_cleanuprun
            WHERE started_at >= %(since)s AND started_at <= %(now)s AND NOT paused
            GROUP BY 1 ORDER BY 1
            """,
            {"step": step, "origin": datetime(2000, 1, 1, tzinfo=UTC), "since": since, "now": now},
        )
        live = [(moment.timestamp(), examined) for moment, examined in cursor.fetchall()]
    hours: dict[float, dict[str, int]] = {}
    for hour, outcome, n in decisions_per_hour(since, now):
        hours.setdefault(hour.timestamp(), dict.fromkeys(StopDecision.Outcome.values, 0))[
            outcome
        ] = n
    return {
        "from": since.timestamp(),
        "to": now.timestamp(),
        "live_previews": {"at": [at for at, _ in live], "previews": [n for _, n in live]},
        "stops_per_hour": {
            "at": list(hours),
            **{o: [h[o] for h in hours.values()] for o in StopDecision.Outcome.values},
        },
    }


def _percentile(histogram: Counter[int], fraction: float) -> int | None:
    """The upper edge (seconds) of the bucket the `fraction` percentile falls in; the last
    bucket saturates at its lower edge (a day)."""
    total = sum(histogram.values())
    if not total:
        return None
    buckets = sorted(histogram)
    reached = list(accumulate(histogram[bucket] for bucket in buckets))
    bucket = buckets[bisect_left(reached, fraction * total)]
    return LATE_BUCKET_EDGES[min(bucket, len(LATE_BUCKET_EDGES) - 1)]


def counts_in_words(counts: dict[str, int]) -> str:
    """ "stopped 3, failed 1" (the non-zero ones), or "none"."""
    return ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "never"


def rate_in_words(rate: float | None) -> str:
    return f"{rate:.1%}" if rate is not None else "none settled"


def stats_brief(stats: dict) -> str:
    """One line for the admin: what matters at a glance."""
    stops, previews = stats["stops"], stats["previews"]
    rate, p95 = stops["failure_rate"], stops["seconds_past_threshold"]["p95_within"]
    return (
        f"Last {stats['window']['hours']:g} h: {counts_in_words(stops['by_outcome'])}"
        + (f" (failure rate {rate:.1%})" if rate is not None else "")
        + (f"; 95 % of stops within {p95} s past the threshold" if p95 is not None else "")
        + f"; {stops['idle_container_hours']} idle container-hours. Now: "
        f"{previews['by_state']['running']} running, {previews['overdue']} past their "
        f"threshold, {stats['stops_pending']} stop(s) pending."
    )


def stats_in_words(stats: dict) -> list[str]:
    """The statistics in words, for a terminal."""
    previews, stops, sweeps = stats["previews"], stats["stops"], stats["sweeps"]
    paused, late = stats["paused"], stops["seconds_past_threshold"]
    pause = Pause(**paused).describe() if paused else "running"
    lines = [
        f"cleanup: {pause}",
        f"previews: {counts_in_words(previews['by_state'])}",
        f"  running by activity: {counts_in_words(previews['running_by_level'])}",
        f"  past their threshold now: {previews['overdue']} ({previews['overdue_hours']} h)",
        f"stops pending: {stats['stops_pending']}",
    ]
    for engine in stats["engines"]:
        state = "reachable" if engine["reachable"] else f"UNREACHABLE ({engine['error']})"
        lines.append(
            f"engine {engine['engine']}: {state}, {engine['containers_running']} container(s) "
            f"and {engine['previews_running']} preview(s) running of "
            f"{engine['capacity'] if engine['capacity'] is not None else 'no'} capacity, "
            f"reported {_when(engine['reported_at'])}"
        )
    rate = stops["failure_rate"]
    lines += [
        f"last {stats['window']['hours']:g} h: {counts_in_words(stops['by_outcome'])}"
        + (f"; failure rate {rate:.1%}" if rate is not None else ""),
        *(
            f"  {reason}: {counts_in_words(outcomes)}"
            for reason, outcomes in stops["by_reason"].items()
        ),
        f"  past the threshold when stopped: half within {late['median_within']} s, "
        f"95 % within {late['p95_within']} s "
        f"({late['stops']} stops); idle container-hours {stops['idle_container_hours']}; "
        f"orphans removed {stops['orphans_removed']}; "
        f"removed after the retention {stops['retention_removed']}",
        f"sweeps: {sweeps['run']} run, {sweeps['paused']} paused, {sweeps['skipped']} skipped "
        "(another was running)",
    ]
    last = stats["last_sweep"]
    if last:
        started = _when(last["started_at"])
        lines.append(f"  last: run {last['run']} ({last['trigger']}) at {started}")
    lines.append(f"  next due: {_when(stats['next_sweep_due_at'])}")
    return lines
