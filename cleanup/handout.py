"""Which handed-out stops the broker still holds: a marker per stop decision in Redis.

The sweep hands a stop to the broker and then marks it `queued`, in the same Redis as the
broker's messages, unless its task marked it already. A stop task that gives up without
being able to record it (the database was down) marks it `ended`. The marker goes when
the decision settles. So for a decision still pending in PostgreSQL:
- `queued`: its message is in the broker, or a worker runs it (one of a worker that died
  comes back after the visibility timeout); nothing to do;
- `ended`: nothing will carry it out any more; hand it out again, and its task may take
  over the claim the last one left behind;
- missing: Redis lost the message (a restart without persistence), or the sweep died
  before it marked the stop (the message may or may not have reached the broker); hand
  it out again: a second copy of a stop does nothing (cleanup.stops).
  Its earlier task may still be running, so the new one takes over only a claim older
  than a stop can take (`TAKE_OVER_AFTER`), and the sweep waits until then.
Losing Redis loses no decision: the markers only save waiting for the lost-stop cutoff.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta

import redis
from django.conf import settings

from cleanup.models import StopDecision
from kosuke.redis_client import redis_client
from previews.models import Preview, PreviewState

QUEUED, ENDED = "queued", "ended"
# A stop task cannot run longer than its hard time limit: a claim this old is abandoned.
TAKE_OVER_AFTER = timedelta(seconds=settings.STOP_TASK_TIME_LIMIT_SECONDS)


def claim_prefix(decision_id: int) -> str:
    """How the claim tokens of a decision's attempts begin (each attempt adds its own)."""
    return f"decision:{decision_id}:"


def _key(decision_id: int) -> str:
    return f"cleanup:stop:{decision_id}"


def pending_lost_after() -> timedelta:
    """A stop handed out this long ago and still pending was lost for good (its message and
    its marker both gone): longer than a redelivery (the visibility timeout) plus all
    retries. The sweep settles it as failed and decides the session afresh."""
    return timedelta(seconds=2 * settings.CELERY_VISIBILITY_TIMEOUT_SECONDS + 300)


def handout_mark(decision_id: int, state: str, *, unless_marked: bool = False) -> None:
    """Mark a handed-out decision; `unless_marked` keeps a mark already there (the `ended`
    of a task that gave up before the sweep came to mark its stop `queued`)."""
    ttl = int(pending_lost_after().total_seconds())
    redis_client().set(_key(decision_id), state, ex=ttl, nx=unless_marked)


def handout_clear(decision_id: int) -> None:
    """The decision settled: nothing is handed out for it any more. Best effort."""
    with contextlib.suppress(redis.RedisError):  # if not, the marker expires on its own
        redis_client().delete(_key(decision_id))


def handout_states(decision_ids: Iterable[int]) -> dict[int, str | None]:
    """The marker of each decision (None: missing), in one round trip."""
    ids = list(decision_ids)
    if not ids:
        return {}
    values = redis_client().mget([_key(decision_id) for decision_id in ids])
    return dict(zip(ids, values, strict=True))


def stops_to_hand_out_again(
    pending: list[StopDecision], previews: list[Preview], now: datetime
) -> list[tuple[StopDecision, bool]]:
    """The pending stops nothing carries out any more, each with whether its task may take
    over the claim the last one left (see cleanup.handout)."""
    states = handout_states(decision.pk for decision in pending)
    claims = {
        p.claim_token.rsplit(":", 1)[0] + ":": p
        for p in previews
        if p.state == PreviewState.STOPPING and p.claim_token.startswith("decision:")
    }
    again = []
    for decision in pending:
        state = states[decision.pk]
        if state == QUEUED:
            continue
        claimed = claims.get(claim_prefix(decision.pk))
        if state != ENDED and claimed and now - claimed.state_changed_at < TAKE_OVER_AFTER:
            continue  # its message is gone, but its task may still be stopping it
        again.append((decision, state == ENDED))
    return again
