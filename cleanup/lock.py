"""The sweep lock: one sweep at a time, however many beats and workers run.

It lives one interval (at least 5 s) and a thread renews it every third of that while the
sweep runs, so it is free again at most one interval after its holder died.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from kosuke.redis_client import redis_client

logger = logging.getLogger(__name__)
LOCK_KEY = "cleanup:sweep-lock"


class SweepLock:
    """Held while the sweep runs. `lost` is set when it could not be renewed within its
    time to live: another sweep may run now, so this one must not write its decisions."""

    def __init__(self) -> None:
        self.ttl = max(5, settings.CLEANUP_INTERVAL_SECONDS)
        self.lost = threading.Event()
        self._lock = redis_client().lock(LOCK_KEY, timeout=self.ttl, thread_local=False)
        self._done = threading.Event()

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._done.wait(self.ttl / 3):
            try:
                self._lock.reacquire()
                renewed = time.monotonic()
            except Exception:  # Redis away, or the lock expired and went
                if time.monotonic() - renewed >= self.ttl:
                    logger.warning("sweep: lost the sweep lock", exc_info=True)
                    self.lost.set()
                    return


@contextmanager
def sweep_lock() -> Iterator[SweepLock | None]:
    """Yields the held lock, or None when another sweep holds it; released on the way out."""
    held = SweepLock()
    if not held._lock.acquire(blocking=False):
        yield None
        return
    renewer = threading.Thread(target=held._renew, name="sweep-lock", daemon=True)
    renewer.start()
    try:
        yield held
    finally:
        held._done.set()
        renewer.join()
        with contextlib.suppress(Exception):  # expired, or Redis away: it frees itself
            held._lock.release()
