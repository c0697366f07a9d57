"""Live progress of cleanup runs: the latest state in a Redis key, every change on a channel.

Losing Redis loses only this live view; the run itself is recorded in PostgreSQL.
"""

from __future__ import annotations

import json
import logging

import redis

from cleanup.models import CleanupRun
from kosuke.redis_client import redis_client

CHANNEL = "cleanup:progress"
PROGRESS_TTL_SECONDS = 24 * 3600
logger = logging.getLogger(__name__)


def progress_key(run_id: int) -> str:
    return f"cleanup:run:{run_id}"


def progress_publish(run: CleanupRun, phase: str) -> None:
    """Tell watchers where `run` stands; a Redis outage only costs the live view."""
    message = json.dumps({**run.summary(), "phase": phase})
    try:
        with redis_client().pipeline() as pipe:
            pipe.set(progress_key(run.pk), message, ex=PROGRESS_TTL_SECONDS)
            pipe.publish(CHANNEL, message)
            pipe.execute()
    except redis.RedisError as exc:
        logger.warning("progress of run %s not published: %s", run.pk, exc)
