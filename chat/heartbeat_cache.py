"""What the heartbeat reads of a session, kept in Redis (chat.heartbeat), and the
calls that keep it true: every place that writes the stop rules' inputs of a session
(its last activity, idle timeout, keep-alive, its preview's state and start) calls
`stop_inputs_changed`; deleting a session calls `session_forgotten`.

- `heartbeat:name:<owner>:<project>:<session>`: the session's pk (ids never change);
- `heartbeat:inputs:<pk>`: the inputs, with the version they were read at;
- `heartbeat:version:<pk>`: bumped after every committed change to the inputs.

Inputs read at an older version than the current one are read again from the database,
and a read that raced with a change is never stored (the store checks the version it
was read at, atomically). Were a bump lost with Redis, the inputs expire within
INPUTS_TTL_SECONDS.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis
from django.db import transaction

from kosuke.redis_client import async_redis_client, redis_client

if TYPE_CHECKING:
    from chat.models import ChatSession

NAME_TTL_SECONDS = 24 * 3600
INPUTS_TTL_SECONDS = 600
VERSION_TTL_SECONDS = 24 * 3600
logger = logging.getLogger(__name__)

# Store the inputs only if the version is still the one they were read at.
_STORE_IF_CURRENT = """
if (redis.call('GET', KEYS[2]) or '0') == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
    return 1
end
return 0
"""


def name_key(owner_pk: int, project_id: str, session_id: str) -> str:
    return f"heartbeat:name:{owner_pk}:{project_id}:{session_id}"


def inputs_key(session_pk: int) -> str:
    return f"heartbeat:inputs:{session_pk}"


def version_key(session_pk: int) -> str:
    return f"heartbeat:version:{session_pk}"


def inputs_current(stored: str | None, version: str | None) -> dict | None:
    """The stored inputs, if read at the current version."""
    if stored is None:
        return None
    entry = json.loads(stored)
    return entry["inputs"] if entry["version"] == (version or "0") else None


async def inputs_store_if_current(session_pk: int, inputs: dict, version: str | None) -> None:
    entry = json.dumps({"version": version or "0", "inputs": inputs})
    await async_redis_client().eval(
        _STORE_IF_CURRENT,
        2,
        inputs_key(session_pk),
        version_key(session_pk),
        entry,
        version or "0",
        INPUTS_TTL_SECONDS,
    )


def stop_inputs_changed(session_pks: Iterable[int]) -> None:
    """The stop rules' inputs of these sessions changed (or will, when the transaction
    commits): heartbeats read them again from the database."""
    pks = list(session_pks)
    if pks:
        transaction.on_commit(functools.partial(_versions_bump, pks))


def _versions_bump(session_pks: list[int]) -> None:
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for pk in session_pks:
                pipe.incr(version_key(pk))
                pipe.expire(version_key(pk), VERSION_TTL_SECONDS)
            pipe.execute()
    except redis.RedisError as exc:  # heartbeats may answer the old inputs until they expire
        logger.warning("heartbeat inputs of %s session(s) not refreshed: %s", len(session_pks), exc)


def session_forgotten(session: ChatSession) -> None:
    """A deleted session: its heartbeats answer 404 from now on."""
    stop_inputs_changed([session.pk])
    name = name_key(session.owner_id, session.project_id, session.session_id)
    transaction.on_commit(functools.partial(_forget_name, name))


def _forget_name(name: str) -> None:
    try:
        redis_client().delete(name)
    except redis.RedisError as exc:
        logger.warning("heartbeat name of a deleted session not forgotten: %s", exc)
