"""Database connections of the web process and the stops worker, which come from a pool
(kosuke.settings, kosuke.celery)."""

from __future__ import annotations

from django.db import connection


def connection_give_back() -> None:
    """Return this thread's connection to the pool before waiting on something else (a
    worker's reply, a run to finish, Docker stopping a container): whoever waits must not
    hold one of the few pooled connections. The next query takes one again (without a
    pool: opens one). Not inside a transaction."""
    if not connection.in_atomic_block:
        connection.close()
