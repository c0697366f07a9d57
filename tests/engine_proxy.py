"""A Unix-socket proxy in front of the real Docker engine that fails chosen requests.

Tests point a preview's engine URL at it to meet a failing engine, then a recovering
one, without touching the real engine: `fail(b"/stop", times=3)` cuts the connection of
the next three requests whose first bytes contain `/stop`; `hold(b"/stop")` keeps such
requests waiting until `let_through()` lets them on, one at a time; everything else goes
through.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path


class EngineProxy:
    def __init__(self, socket_path: Path, target_url: str):
        if not target_url.startswith("unix://"):
            raise ValueError("the proxy forwards to a Unix-socket engine only")
        self.target = target_url.removeprefix("unix://")
        self.path = socket_path
        self.url = f"unix://{socket_path}"
        self.failed = 0  # requests cut so far
        self.requests: list[str] = []  # "METHOD /path" of every request seen
        self._pattern = b""
        self._failures_left = 0
        self._held_pattern = b""
        self.held = 0  # requests that have waited at the hold so far
        self._gate = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(socket_path))
        self._server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def fail(self, pattern: bytes, *, times: int) -> None:
        with self._lock:
            self._pattern, self._failures_left = pattern, times

    def hold(self, pattern: bytes) -> None:
        with self._lock:
            self._held_pattern, self._gate = pattern, threading.Semaphore(0)

    def let_through(self, count: int = 1) -> None:
        self._gate.release(count)

    def hold_no_more(self) -> None:
        """Stop holding; every request waiting at the hold goes on."""
        with self._lock:
            self._held_pattern, gate = b"", self._gate
        gate.release(10**6)

    def close(self) -> None:
        self.hold_no_more()  # nothing stays stuck at the hold
        self._server.close()
        os.unlink(self.path)

    def _should_fail(self, request: bytes) -> bool:
        with self._lock:
            if self._failures_left and self._pattern in request[:512]:
                self._failures_left -= 1
                self.failed += 1
                return True
            return False

    def _should_hold(self, request: bytes) -> threading.Semaphore | None:
        with self._lock:
            if self._held_pattern and self._held_pattern in request[:512]:
                self.held += 1
                return self._gate
            return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, inspect: bool) -> None:
        try:
            while data := source.recv(65536):
                if inspect and data.split(b" ", 1)[0] in (b"GET", b"POST", b"DELETE", b"HEAD"):
                    self.requests.append(b" ".join(data.split(b" ", 2)[:2]).decode())
                if inspect and self._should_fail(data):
                    break
                if inspect and (gate := self._should_hold(data)):
                    gate.acquire()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
