from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from kosuke.celery import app
from previews.engine import engine
from tests.engine_proxy import EngineProxy


@pytest.fixture
def worker(transactional_db, previews_on_docker):
    """A real Celery worker in this process (threads), consuming both queues from Redis."""
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        queues=["sweeps", "stops"],
        perform_ping_check=False,
        shutdown_timeout=60,
    ) as running_worker:
        yield running_worker


@pytest.fixture
def engine_proxy(previews_on_docker, tmp_path_factory):
    """A proxy to the real engine that fails the requests a test asks it to."""
    proxy = EngineProxy(tmp_path_factory.mktemp("proxy") / "docker.sock", engine().url)
    yield proxy
    proxy.close()
