"""The sweep lock: one sweep at a time, however many beats and workers run.

It lives one interval (at least 5 s) and a thread renews it every third of that while the
sweep runs, so it is free again at most one interval after its holder died.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from kosuke.redis_client import redis_client

logger = logging.getLogger(__name__)
LOCK_KEY = "cleanup:sweep-lock"


@contextmanager
def sweep_lock() -> Iterator[bool]:
    """Yields whether this process holds the sweep lock (released on the way out)."""
    ttl = max(5, settings.CLEANUP_INTERVAL_SECONDS)
    lock = redis_client().lock(LOCK_KEY, timeout=ttl, thread_local=False)
    if not lock.acquire(blocking=False):
        yield False
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            try:
                lock.reacquire()
            except Exception:  # lost it (expired, or Redis down): the sweep goes on alone
                logger.warning("sweep: could not renew the sweep lock", exc_info=True)
                return

    renewer = threading.Thread(target=renew, name="sweep-lock", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        done.set()
        renewer.join()
        if lock.owned():
            lock.release()
