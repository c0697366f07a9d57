"""Counters of what the cleanup did, kept in Redis so that every process (web, workers,
beat) adds to the same numbers and `/metrics` on any web process reports them: stop
outcomes by reason, sweeps and their duration, sweeps skipped because another ran,
previews whose containers were created or started again, by engine.

Counters only go up; losing Redis resets them, which Prometheus' rate() takes as a
counter reset. The gauges (previews now, pending stops, paused) are not here: they are
computed from the database at scrape time (cleanup.stats).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import redis
from django.utils import timezone

from kosuke.redis_client import redis_client

logger = logging.getLogger(__name__)

STOPS_KEY = "cleanup:metrics:stops"  # "<outcome>|<reason>" -> count
SWEEPS_KEY = "cleanup:metrics:sweeps"  # seconds, le:<bucket> -> count, skipped
SKIPPED_HOURLY_KEY = "cleanup:metrics:skipped-hourly"  # hour (epoch) -> count
PREVIEW_STARTS_KEY = "cleanup:metrics:preview-starts"  # "<created|started>|<engine>" -> count
# Sweep duration buckets in seconds: a sweep of thousands of previews takes about 1 s.
SWEEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
SKIPPED_HOURS_KEPT = 31 * 24


def _quietly(what: str, write) -> None:
    """Counting must never fail what it counts: a Redis outage costs only the numbers."""
    try:
        write(redis_client())
    except redis.RedisError as exc:
        logger.warning("metrics: %s not counted: %s", what, exc)


def metrics_stops_settled(decisions: Iterable) -> None:
    """Count settled stop decisions by outcome and reason."""
    counts = Counter(f"{d.outcome}|{d.stop_reason}" for d in decisions)
    if not counts:
        return

    def write(client: redis.Redis) -> None:
        with client.pipeline(transaction=False) as pipe:
            for field, n in counts.items():
                pipe.hincrby(STOPS_KEY, field, n)
            pipe.execute()

    _quietly("stop outcomes", write)


def metrics_sweep_recorded(duration_seconds: float) -> None:
    bucket = next((b for b in SWEEP_BUCKETS if duration_seconds <= b), "+Inf")

    def write(client: redis.Redis) -> None:
        with client.pipeline(transaction=False) as pipe:
            pipe.hincrbyfloat(SWEEPS_KEY, "seconds", duration_seconds)
            pipe.hincrby(SWEEPS_KEY, f"le:{bucket}", 1)
            pipe.execute()

    _quietly("a sweep", write)


def metrics_sweep_skipped(now: datetime | None = None) -> None:
    """A sweep found another one running and did nothing."""
    hour = int((now or timezone.now()).timestamp()) // 3600 * 3600

    def write(client: redis.Redis) -> None:
        with client.pipeline(transaction=False) as pipe:
            pipe.hincrby(SWEEPS_KEY, "skipped", 1)
            pipe.hincrby(SKIPPED_HOURLY_KEY, str(hour), 1)
            pipe.hdel(SKIPPED_HOURLY_KEY, str(hour - SKIPPED_HOURS_KEPT * 3600))
            pipe.execute()

    _quietly("a skipped sweep", write)


def metrics_preview_started(engine: str, *, created: bool) -> None:
    """A preview's containers were created, or its stopped ones started again, on `engine`."""
    field = f"{'created' if created else 'started'}|{engine}"
    _quietly("a preview start", lambda client: client.hincrby(PREVIEW_STARTS_KEY, field, 1))


def preview_start_counts() -> dict[tuple[str, str], int]:
    """{(created or started, engine): count} since Redis last lost its data."""
    return _counts_by_pair(PREVIEW_STARTS_KEY)


def sweeps_skipped_since(since: datetime) -> int:
    """Sweeps skipped (another was running) from the hour of `since` on."""
    first_hour = int(since.timestamp()) // 3600 * 3600
    try:
        hours = redis_client().hgetall(SKIPPED_HOURLY_KEY)
    except redis.RedisError:
        return 0
    return sum(int(n) for hour, n in hours.items() if int(hour) >= first_hour)


def stop_counts() -> dict[tuple[str, str], int]:
    """{(outcome, reason): count} since Redis last lost its data."""
    return _counts_by_pair(STOPS_KEY)


def _counts_by_pair(key: str) -> dict[tuple[str, str], int]:
    """A hash of counts whose fields are "<first>|<second>", by (first, second)."""
    counts = {}
    for field, n in redis_client().hgetall(key).items():
        first, _, second = field.partition("|")
        counts[first, second] = int(n)
    return counts


def sweep_counts() -> dict:
    """{"seconds", "skipped", "buckets": [(upper bound, cumulative count)]}."""
    raw = redis_client().hgetall(SWEEPS_KEY)
    cumulative, buckets = 0, []
    for bound in (*SWEEP_BUCKETS, "+Inf"):
        cumulative += int(raw.get(f"le:{bound}", 0))
        buckets.append((str(bound), cumulative))
    return {
        "seconds": float(raw.get("seconds", 0.0)),
        "skipped": int(raw.get("skipped", 0)),
        "buckets": buckets,
    }
