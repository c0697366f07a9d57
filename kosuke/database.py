"""Database connections of the web process and the engine workers, which come from a pool
(kosuke.settings, kosuke.celery)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


def connection_give_back() -> None:
    """Return this thread's connection to the pool before waiting on something else (a
    worker's reply, a run to finish, Docker stopping a container): whoever waits must not
    hold one of the few pooled connections. The next query takes one again (without a
    pool: opens one). Not inside a transaction.

    Never fails: what was done and committed before stands (a message stored is not
    answered with an error), and a connection that cannot be given back is dropped."""
    if connection.in_atomic_block:
        return
    try:
        connection.close()
    except DatabaseError as error:  # Django has forgotten the connection all the same
        logger.warning("database connection dropped, not given back: %s", error)


async def database_call(
    function: Callable[..., Any], *args: Any, thread_sensitive: bool = True, **kwargs: Any
) -> Any:
    """`function(*args, **kwargs)` in a thread, for code served beside Django (kosuke.asgi):
    its connection goes straight back to the pool after (a broken one is dropped), as no
    end of request would give it back. `thread_sensitive=False` runs it on the event
    loop's executor, for calls that must not queue behind one another."""

    def call() -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connection_give_back()

    return await sync_to_async(call, thread_sensitive=thread_sensitive)()
