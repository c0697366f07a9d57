"""Who has a session's preview panel open, kept in Redis so heartbeats never write the database.

Each session has a sorted set of client ids scored by when each was last seen. A client
unseen for PRESENCE_PING_TIMEOUT_SECONDS no longer counts as a viewer; its entry is kept
(until PRESENCE_RETENTION) so "when was the last viewer seen" survives disconnects,
which the reconnect grace period needs. One more sorted set holds, per session, when any
viewer was last seen: the sweep reads it for thousands of sessions in one command.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio
from django.conf import settings
from django.utils import timezone

from kosuke.redis_client import async_redis_client, redis_client

PRESENCE_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class Presence:
    viewers: int
    last_seen_at: datetime | None


def _key(session_pk: int) -> str:
    return f"presence:session:{session_pk}"


LAST_SEEN_KEY = "presence:last-seen"


async def heartbeat_record(
    *, session_pk: int, client_id: str, now: datetime | None = None, also_get: Sequence[str] = ()
) -> tuple[Presence, list[str | None]]:
    """Mark `client_id` as viewing the session's preview now; returns the session's
    presence, and the values of the keys `also_get` (the heartbeat's stop inputs). One
    round trip to Redis, awaited: the heartbeat is the API's hottest route."""
    now = now or timezone.now()
    key = _key(session_pk)
    async with async_redis_client().pipeline(transaction=False) as pipe:
        forgotten = (now - PRESENCE_RETENTION).timestamp()
        pipe.zadd(key, {client_id: now.timestamp()})
        pipe.zremrangebyscore(key, "-inf", forgotten)
        pipe.expire(key, PRESENCE_RETENTION)
        pipe.zadd(LAST_SEEN_KEY, {str(session_pk): now.timestamp()}, gt=True)
        pipe.zremrangebyscore(LAST_SEEN_KEY, "-inf", forgotten)
        _presence_commands(pipe, session_pk, now)
        for key in also_get:
            pipe.get(key)
        replies = await pipe.execute()
    *_, viewers, latest = replies[: len(replies) - len(also_get)]
    return _presence(viewers, latest), replies[len(replies) - len(also_get) :]


def _presence_commands(
    pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline, session_pk: int, now: datetime
) -> None:
    """Queue what a session's presence is read from: viewers seen within the ping timeout,
    and the latest of them."""
    seen_since = (now - timedelta(seconds=settings.PRESENCE_PING_TIMEOUT_SECONDS)).timestamp()
    pipe.zcount(_key(session_pk), seen_since, "+inf")
    pipe.zrange(_key(session_pk), -1, -1, withscores=True)


def _presence(viewers: int, latest: list[tuple[str, float]]) -> Presence:
    last_seen_at = datetime.fromtimestamp(latest[0][1], tz=UTC) if latest else None
    return Presence(viewers=viewers, last_seen_at=last_seen_at)


def sessions_presence(
    session_pks: Iterable[int], *, now: datetime | None = None
) -> dict[int, Presence]:
    """Presence of many sessions in one round trip to Redis."""
    now = now or timezone.now()
    pks = list(session_pks)
    with redis_client().pipeline(transaction=False) as pipe:
        for pk in pks:
            _presence_commands(pipe, pk, now)
        replies = pipe.execute()
    return {
        pk: _presence(viewers, latest)
        for pk, viewers, latest in zip(pks, replies[::2], replies[1::2], strict=True)
    }


def sessions_last_seen(session_pks: Iterable[int]) -> dict[int, datetime | None]:
    """When any viewer of each session was last seen (None: not in the last day), for many
    sessions in one command."""
    pks = list(session_pks)
    if not pks:
        return {}
    scores = redis_client().zmscore(LAST_SEEN_KEY, [str(pk) for pk in pks])
    return {
        pk: None if score is None else datetime.fromtimestamp(score, tz=UTC)
        for pk, score in zip(pks, scores, strict=True)
    }
