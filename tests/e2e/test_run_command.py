"""The README's first command, ./scripts/run, on embedded PostgreSQL and Redis: it comes
up, serves the API, runs the sweeps worker, the engine's worker, beat and Flower, and
Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from kosuke.embedded import free_port
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _status(url: str, **options) -> int | None:
    try:
        return requests.get(url, timeout=5, **options).status_code
    except requests.RequestException:
        return None


class RunCommand:
    def __init__(self, state_dir: Path):
        self.web, self.flower = free_port(), free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            # One engine, `local` at DOCKER_HOST: the workers the test expects.
            if key not in ("DATABASE_URL", "REDIS_URL", "PREVIEW_ENGINES")
        }
        self.env = {
            **env,
            "KOSUKE_STATE_DIR": str(state_dir),
            "WEB_PORT": str(self.web),
            "FLOWER_PORT": str(self.flower),
            "CLEANUP_INTERVAL_SECONDS": "2",
        }
        self.log = state_dir.parent / "run.log"

    def start(self) -> float:
        """Start it; returns the seconds until /readyz answered 200."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["./scripts/run"],
            cwd=ROOT,
            env=self.env,
            stdout=open(self.log, "wb"),  # noqa: SIM115 - owned by the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            lambda: (
                _status(f"http://127.0.0.1:{self.web}/readyz") == 200
                or self.process.poll() is not None
            ),
            timeout=240,
            what="/readyz",
        )
        assert self.process.poll() is None, self.output()
        return time.monotonic() - started

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """./scripts/manage in a second terminal: the same environment as the first."""
        return subprocess.run(
            ["./scripts/manage", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """The command and everything it started (honcho gives each its own group)."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def stop(self, *, whole_group: bool = True) -> None:
        """SIGINT to every process, as Ctrl-C in a terminal sends it, or to the command's
        process alone, as `kill -INT <pid>` does."""
        if whole_group:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            os.kill(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=90)


def _workers_queues(flower: str, auth: tuple[str, str]) -> dict[str, list[str]]:
    """The workers Flower sees, by the name before `@`, with the queues each consumes."""
    workers = requests.get(f"{flower}/api/workers?refresh=1", auth=auth, timeout=10).json()
    return {
        name.split("@")[0]: sorted(queue["name"] for queue in info.get("active_queues") or [])
        for name, info in workers.items()
    }


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _memory_by_process(processes: list[psutil.Process]) -> dict[str, int]:
    """Resident MiB of each process, named by its pid and command line."""
    return {
        f"{p.pid:>7} {' '.join(p.cmdline())[:90]}": p.memory_info().rss // 2**20 for p in processes
    }


@pytest.fixture
def run_command(tmp_path, previews_on_docker):
    command = RunCommand(tmp_path / "state")
    yield command
    if getattr(command, "process", None) and command.process.poll() is None:
        os.killpg(command.process.pid, signal.SIGKILL)


def test_the_run_command_brings_the_system_up_and_down(run_command):
    first_start = run_command.start()
    out = run_command.output()
    token = re.search(r"dev: API token (\S+)", out).group(1)
    flower_auth = tuple(re.search(r"basic auth (\S+):(\S+)\)", out).groups())
    web, flower = f"http://127.0.0.1:{run_command.web}", f"http://127.0.0.1:{run_command.flower}"

    created = requests.post(
        f"{web}/api/projects/smoke/chat-sessions",
        json={"title": "smoke"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert wait_for(lambda: _status(f"{flower}/api/workers"), timeout=60, what="Flower") == 401
    # Two workers, each on its queues: the sweeps (celery@) and engine local's (engine-local@,
    # the Procfile's `engine` process once per engine).
    wait_for(
        lambda: (
            _workers_queues(flower, flower_auth)
            == {"celery": ["sweeps"], "engine-local": ["engine.local"]}
        ),
        timeout=60,
        what="both workers (celery@ on sweeps, engine-local@ on engine.local) in Flower",
    )
    sweeps = wait_for(
        lambda: [
            task
            for task in requests.get(f"{flower}/api/tasks", auth=flower_auth, timeout=10)
            .json()
            .values()
            if task["name"] == "cleanup.sweep"
        ],
        timeout=60,
        what="a sweep task in Flower",
    )
    assert sweeps[0]["state"] in ("RECEIVED", "STARTED", "SUCCESS")
    started = run_command.processes()
    # Flower reads its password from the environment, not from its command line.
    command_lines = [" ".join(p.cmdline()) for p in started if p.is_running()]
    assert command_lines and not any(flower_auth[1] in line for line in command_lines)
    print(f"first start to /readyz 200: {first_start:.1f} s")
    for name, mib in _memory_by_process(started).items():
        print(f"  {mib:4d} MiB  {name}")

    # manage.py beside the running system finds its stores and settings.
    beside = run_command.manage("cleanup_previews", "--stats")
    assert beside.returncode == 0, beside.stderr
    assert "cleanup: running" in beside.stdout

    run_command.stop()

    assert "dev: stopped" in run_command.output()
    assert _alive(started) == []
    # Once it has stopped there is nothing to reach: one line saying so, not a traceback.
    alone = run_command.manage("cleanup_previews", "--stats")
    assert alone.returncode == 2
    assert alone.stderr.startswith("manage.py: PostgreSQL does not answer")
    assert alone.stderr.count("\n") == 1
    postgres = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(run_command.env["KOSUKE_STATE_DIR"]) in " ".join(p.info["cmdline"] or [])
    ]
    assert postgres == []

    second_start = run_command.start()
    assert "superuser 'admin' exists" in run_command.output()
    print(f"second start to /readyz 200: {second_start:.1f} s")
    started = run_command.processes()
    run_command.stop(whole_group=False)
    assert "dev: stopped" in run_command.output()
    assert _alive(started) == []
