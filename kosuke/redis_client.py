"""The shared Redis connections: presence, locks, live progress, metrics.

Sync code uses one client per process. Async views (the heartbeat) use an asyncio client
per event loop, as its connections belong to the loop that opened them: a Redis that is
slow or down then holds up only the requests that wait on it, not the whole loop.
"""

from __future__ import annotations

import asyncio
import functools
import weakref

import redis
import redis.asyncio
from django.conf import settings


def _options() -> dict:
    # Every command has a timeout instead of hanging.
    return {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "decode_responses": True,
    }


@functools.cache
def redis_client() -> redis.Redis:
    """One connection pool per process."""
    return redis.Redis.from_url(settings.REDIS_URL, **_options())


ASYNC_CONNECTIONS_BESIDE_STREAMS = 100
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def async_redis_client() -> redis.asyncio.Redis:
    """The asyncio client of the running event loop (one connection pool per loop)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            # Each open live stream holds one connection (its subscription), on top of
            # the short ones the heartbeats take; redis-py's default caps a pool at 100.
            max_connections=settings.LIVE_STREAMS_MAX + ASYNC_CONNECTIONS_BESIDE_STREAMS,
            **_options(),
        )
    return client
