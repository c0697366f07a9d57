"""Live progress of the cleanup, in Redis, for the dashboard (cleanup.live).

Every event (a run started, swept with its decisions, each stop settled, finished; a
pause or resume) is appended to the capped stream `cleanup:events`, whose entry id is
the event's id, and published with that id on the channel `cleanup:progress`, in one
atomic script: a watcher subscribed to the channel gets each event at once, and one
that reconnects reads from the stream what it missed after the last id it saw.

Losing Redis loses only this live view; the runs themselves are recorded in PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from cleanup.models import CleanupRun, StopDecision
from kosuke.redis_client import redis_client

CHANNEL = "cleanup:progress"
EVENTS_KEY = "cleanup:events"
# Events kept for reconnecting watchers: a sweep of a thousand stops writes a thousand
# and a few; a watcher away longer than that reloads the page's state instead.
EVENTS_KEPT = 10_000
PENDING_TTL_SECONDS = 24 * 3600
logger = logging.getLogger(__name__)

# Append to the stream, then publish "<id> <event>": one round trip, and no watcher can
# see an event on the channel that the stream does not hold yet.
_APPEND_AND_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[1])
return id
"""


@functools.cache
def _append_and_publish() -> redis.commands.core.Script:
    return redis_client().register_script(_APPEND_AND_PUBLISH)


def _publish(pipe: redis.client.Pipeline, event: dict) -> None:
    event = {**event, "at": timezone.now()}  # the server's clock, for the pages
    _append_and_publish()(
        keys=[EVENTS_KEY, CHANNEL],
        args=[json.dumps(event, cls=DjangoJSONEncoder), EVENTS_KEPT],
        client=pipe,
    )


def _pending_key(run_id: int) -> str:
    return f"cleanup:run:{run_id}:pending"


def decision_event(decision: StopDecision) -> dict:
    """One decision as the dashboard shows it."""
    return {
        "decision": decision.pk,
        "session": f"{decision.project_id}/{decision.session_id}",
        "stop_reason": decision.stop_reason,
        "reason": decision.reason,
        "level": decision.level,
        "outcome": decision.outcome,
        "detail": decision.outcome_detail,
    }


def progress_publish(
    run: CleanupRun, phase: str, decisions: list[StopDecision] | None = None
) -> None:
    """Tell watchers where `run` stands (a sweep's phases); once swept, with the decisions
    it recorded. When the sweep hands out stops, the number pending is kept for
    `progress_stop_settled`."""
    # Nothing is counted yet when a run starts: its summary would cost a query for zeros.
    summary = {"run": run.pk, "trigger": run.trigger} if phase == "started" else run.summary()
    event = {**summary, "phase": phase}
    if decisions is not None:
        event["decisions"] = [decision_event(decision) for decision in decisions]
    with _pipeline(f"progress of run {run.pk}") as pipe:
        if phase == "swept":
            pipe.set(_pending_key(run.pk), summary["pending"], ex=PENDING_TTL_SECONDS)
        _publish(pipe, event)


@contextmanager
def _pipeline(what: str) -> Iterator[redis.client.Pipeline]:
    """A pipeline executed at the end; a Redis outage only costs the live view."""
    try:
        with redis_client().pipeline() as pipe:
            yield pipe
            pipe.execute()
    except redis.RedisError as exc:
        logger.warning("%s not published: %s", what, exc)


def progress_stop_settled(decision: StopDecision) -> None:
    """Tell watchers how one stop ended, and that its run finished if it was the last."""
    event = {"run": decision.run_id, "phase": "stopping", **decision_event(decision)}
    try:
        client = redis_client()
        with client.pipeline() as pipe:
            pipe.decr(_pending_key(decision.run_id))
            _publish(pipe, event)
            pending, _ = pipe.execute()
        if pending <= 0:  # below 0: the count expired or was lost with Redis
            client.delete(_pending_key(decision.run_id))
        if pending == 0:
            with client.pipeline() as pipe:
                _publish(pipe, {"run": decision.run_id, "phase": "finished"})
                pipe.execute()
    except redis.RedisError as exc:
        logger.warning("progress of run %s not published: %s", decision.run_id, exc)


def progress_pause_changed(pause: dict | None) -> None:
    """Tell watchers that cleanup was paused (`pause`: who, why, since, until) or resumed."""
    event = {"phase": "paused", "pause": pause} if pause else {"phase": "resumed"}
    with _pipeline("pause") as pipe:
        _publish(pipe, event)


def events_latest_id() -> str:
    """The id of the latest event (empty: none, or Redis is down): a page read from the
    database after this follows the live feed from here without missing anything."""
    try:
        latest = redis_client().xrevrange(EVENTS_KEY, count=1)
    except redis.RedisError as exc:
        logger.warning("live progress unavailable: %s", exc)
        return ""
    return latest[0][0] if latest else "0-0"
