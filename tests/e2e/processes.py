"""Celery processes the end-to-end tests start (worker, beat), and make sure they end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery", "-A", "kosuke"]


class Processes:
    """Starts processes in their own process groups and makes sure they all end."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env, self.started = log_dir, env, []

    def start(self, name: str, *args: str, cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [*CELERY, *args],
            cwd=cwd,
            env={**self.env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append((name, process))
        return process

    def worker(self, name: str) -> subprocess.Popen:
        return self.start(
            name,
            "worker",
            "-Q",
            "sweeps,engine.local",
            "-c",
            "2",
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
        )

    def beat(self, name: str) -> subprocess.Popen:
        schedule = self.log_dir / f"{name}-schedule"
        return self.start(name, "beat", "-s", str(schedule), "--loglevel", "INFO")

    def kill(self, process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _name, process in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.log_dir / f'{name}.log').read_text(errors='replace')[-3000:]}"
            for name, _ in self.started
        )
