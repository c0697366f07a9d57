"""A small in-process memory with an expiry, for lookups the hot path repeats (API
tokens): a hit costs no query. Bounded; thread-safe enough for its use (single dict
operations), and per process: each web process remembers on its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TimedMemo(Generic[V]):
    def __init__(self, seconds: Callable[[], float], *, max_entries: int = 10_000):
        self._seconds = seconds  # read at each put, so settings changes apply
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: Hashable, value: V) -> V:
        seconds = self._seconds()
        if seconds > 0:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()  # rare: start over rather than track ages
            self._entries[key] = (time.monotonic() + seconds, value)
        return value

    def forget(self, matches: Callable[[Hashable, V], bool] | None = None) -> None:
        """Forget the entries `matches(key, value)` picks, or all of them."""
        if matches is None:
            self._entries.clear()
            return
        for key, (_, value) in list(self._entries.items()):
            if matches(key, value):
                self._entries.pop(key, None)
