"""Live progress of cleanup runs, in Redis: where a run stands in `cleanup:run:<id>`, every
change on the `cleanup:progress` channel, and how many of its stops are still pending.

Losing Redis loses only this live view; the run itself is recorded in PostgreSQL.
"""

from __future__ import annotations

import json
import logging

import redis

from cleanup.models import CleanupRun, StopDecision
from kosuke.redis_client import redis_client

CHANNEL = "cleanup:progress"
PROGRESS_TTL_SECONDS = 24 * 3600
logger = logging.getLogger(__name__)


def progress_key(run_id: int) -> str:
    return f"cleanup:run:{run_id}"


def _pending_key(run_id: int) -> str:
    return f"cleanup:run:{run_id}:pending"


def progress_publish(run: CleanupRun, phase: str) -> None:
    """Tell watchers where `run` stands (a sweep's phases); a Redis outage only costs the
    live view. When the sweep hands out stops, the number pending is kept for
    `progress_stop_settled`."""
    # Nothing is counted yet when a run starts: its summary would cost a query for zeros.
    summary = {"run": run.pk, "trigger": run.trigger} if phase == "started" else run.summary()
    message = json.dumps({**summary, "phase": phase})
    try:
        with redis_client().pipeline() as pipe:
            pipe.set(progress_key(run.pk), message, ex=PROGRESS_TTL_SECONDS)
            if phase == "swept":
                pipe.set(_pending_key(run.pk), summary["pending"], ex=PROGRESS_TTL_SECONDS)
            pipe.publish(CHANNEL, message)
            pipe.execute()
    except redis.RedisError as exc:
        logger.warning("progress of run %s not published: %s", run.pk, exc)


def progress_stop_settled(decision: StopDecision) -> None:
    """Tell watchers how one stop ended, and that its run finished if it was the last."""
    event = {
        "run": decision.run_id,
        "phase": "stopping",
        "decision": decision.pk,
        "session": f"{decision.project_id}/{decision.session_id}",
        "outcome": decision.outcome,
        "detail": decision.outcome_detail,
    }
    try:
        client = redis_client()
        with client.pipeline() as pipe:
            pipe.decr(_pending_key(decision.run_id))
            pipe.publish(CHANNEL, json.dumps(event))
            pending, _ = pipe.execute()
        if pending <= 0:  # below 0: the count expired or was lost with Redis
            client.delete(_pending_key(decision.run_id))
        if pending == 0:
            client.publish(CHANNEL, json.dumps({"run": decision.run_id, "phase": "finished"}))
    except redis.RedisError as exc:
        logger.warning("progress of run %s not published: %s", decision.run_id, exc)
