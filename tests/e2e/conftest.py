"""Celery processes for the end-to-end tests (tests/e2e/processes.py), the fault suite's
system of processes (tests/e2e/stack.py) and its table of results."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from django.conf import settings

from previews.engine import engine
from tests.builders import database_url_for_processes
from tests.e2e.processes import Processes
from tests.e2e.stack import Stack
from tests.preview_image import IGNORE_SIGTERM, preview_image_build

_results: list[FaultResult] = []


@dataclass
class FaultResult:
    scenario: str
    tried: int
    lost: int
    duplicated: int
    server_errors: int  # responses 5xx other than 503 while the fault lasted
    converged_after: float  # seconds after the fault ended
    bound: float
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture
def processes(transactional_db, previews_on_docker, tmp_path):
    """Start Celery processes on the test database, Redis and the real engine."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_processes(),
        "REDIS_URL": settings.REDIS_URL,
        "DOCKER_HOST": engine().url,
        "PREVIEW_IMAGE": settings.PREVIEW_IMAGE,
        "PREVIEW_MANAGED_BY": settings.PREVIEW_MANAGED_BY,
        "PREVIEW_STOP_TIMEOUT_SECONDS": "6",
        "CLEANUP_INTERVAL_SECONDS": "2",
        "CELERY_VISIBILITY_TIMEOUT_SECONDS": "10",
    }
    running = Processes(tmp_path, env)
    yield running
    running.stop_all()
    print(running.logs())


@pytest.fixture(scope="session")
def fault_results() -> list[FaultResult]:
    return _results


@pytest.fixture(scope="module")
def stack(docker_client, tmp_path_factory, django_db_blocker):
    """Worker, beat and web on their own PostgreSQL and Redis, the engine behind a proxy.
    Previews run a dev server that ignores SIGTERM, so every stop takes the 2 s timeout
    and a fault can land in the middle of one."""
    image = preview_image_build(
        docker_client, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    managed_by = f"kosuke-faults-{os.getpid()}"
    url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    running = Stack(tmp_path_factory.mktemp("stack"), url, image, managed_by)
    try:  # Stack() cleans up after itself if it cannot start (see Stack.__init__)
        running.worker()
        running.beat()
        running.web()
        yield running
    finally:
        logs = running.logs()
        running.close()
        label = f"kosuke.managed_by={managed_by}"
        for container in docker_client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        if os.environ.get("KOSUKE_FAULT_LOGS"):
            print(logs)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _results:
        return
    write = terminalreporter.write_line
    write("")
    write("fault suite (sweep every 2 s, stop timeout 2 s, visibility timeout 8 s):")
    write(
        f"{'scenario':<32} {'tried':>5} {'lost':>5} {'dup':>4} {'5xx':>4} "
        f"{'converged s':>12} {'bound s':>8}  answers while broken"
    )
    for r in _results:
        write(
            f"{r.scenario:<32} {r.tried:>5} {r.lost:>5} {r.duplicated:>4} "
            f"{r.server_errors:>4} {r.converged_after:>12.1f} {r.bound:>8.1f}  "
            f"{r.statuses or ''}"
        )
