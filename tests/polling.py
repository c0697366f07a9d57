"""Waiting for things the tests can observe, with a deadline instead of a sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout: float, what: str, every: float = 0.1) -> T:
    """Call `probe` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def finished_run(timeout: float = 60):
    """The newest cleanup run, once every stop it found has settled."""
    from cleanup.models import CleanupRun

    return wait_for(
        lambda: CleanupRun.objects.finished().order_by("-pk").first(),
        timeout=timeout,
        what="a cleanup run to finish",
    )
