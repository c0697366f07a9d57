"""The project's Celery worker inside its production image, with pytest-celery: the broker
is a Redis container, the worker is `celery -A kosuke worker -Q sweeps,engine.local` (the
sweeps and the one engine's queue) in the image `scripts/build-image` built, both on a
network of their own.

The test process sends tasks with the project's own Celery settings (routes, queues,
acks_late), only pointed at the broker container. The worker shares the test database
(its socket directory mounted) and reaches the Docker engine through an EngineProxy
whose socket is mounted, so a test can break the engine under it. It runs as root here,
because the test database's socket sits in a directory only root may enter; the compose
tests run the image as uid 10001.

pytest-celery's own fixtures would pull `redis:latest` and `rabbitmq:latest` and build a
worker image from PyPI; those fixtures are replaced here by local images. Its result
backend is not used: the tests read outcomes from the database, as operators do.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from pytest_celery import (
    CeleryBrokerCluster,
    CeleryTestSetup,
    CeleryWorkerCluster,
    CeleryWorkerContainer,
    RedisContainer,
    RedisTestBroker,
)
from pytest_docker_tools import container, fxtr

from cleanup.models import StopDecision
from previews.engine import engine_at
from previews.models import Preview, PreviewState
from tests.builders import database_url_for_processes, session_with_running_preview
from tests.conftest import _service_missing
from tests.engine_proxy import EngineProxy
from tests.polling import wait_for
from tests.production.compose import APP_IMAGE, LOCAL_STORE_IMAGES

REDIS_IMAGE = LOCAL_STORE_IMAGES[1]
QUEUES = "sweeps,engine.local"
VISIBILITY_SECONDS = 6

pytestmark = pytest.mark.django_db(transaction=True)


class LocalRedis(RedisContainer):
    """The broker from the locally built Redis image, published on the loopback."""

    @classmethod
    def image(cls) -> str:
        return REDIS_IMAGE

    @classmethod
    def ports(cls) -> dict:
        return {"6379/tcp": ("127.0.0.1", None)}

    @property
    def host_url(self) -> str:
        # pytest-celery reads the container's own port where /.dockerenv exists (here).
        return f"redis://127.0.0.1:{self.ports['6379/tcp'][0]}/{self.vhost}"


class ProjectWorker(CeleryWorkerContainer):
    """The image's real worker; nothing of pytest-celery inside it."""

    @classmethod
    def worker_name(cls) -> str:
        return "kosuke_test_worker"

    @classmethod
    def worker_queue(cls) -> str:
        return QUEUES

    @classmethod
    def command(cls, *args: str, **kwargs) -> list[str]:
        return [
            "celery", "-A", "kosuke", "worker", "--loglevel", "INFO",
            "-n", f"{cls.worker_name()}@%h", "-Q", QUEUES, "--concurrency", "2",
        ]  # fmt: skip


class ProjectSetup(CeleryTestSetup):
    @classmethod
    def update_app_config(cls, app) -> None:
        """The project's Celery settings (routes, queues, acknowledgement), with the broker
        pytest-celery started."""
        broker_url = app.conf.broker_url
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.update(broker_url=broker_url, result_backend=None)


# The Redis container with the local image (pytest-celery's fixture names its wrapper).
default_redis_broker = container(
    image="{default_redis_broker_image}",
    ports=fxtr("default_redis_broker_ports"),
    environment=fxtr("default_redis_broker_env"),
    network="{default_pytest_celery_network.name}",
    wrapper_class=LocalRedis,
    timeout=60,
    command=fxtr("default_redis_broker_command"),
)

default_worker_container = container(
    image=APP_IMAGE,
    environment=fxtr("default_worker_env"),
    network="{default_pytest_celery_network.name}",
    volumes=fxtr("worker_mounts"),
    user="root",
    wrapper_class=ProjectWorker,
    timeout=60,
    command=fxtr("default_worker_command"),
)


@pytest.fixture(autouse=True)
def _images(docker_client) -> None:
    for image in (APP_IMAGE, REDIS_IMAGE):
        try:
            docker_client.images.get(image)
        except Exception:
            _service_missing(f"no image {image}: run scripts/build-image --local-bases first")


@pytest.fixture
def default_redis_broker_cls() -> type[RedisContainer]:
    return LocalRedis


@pytest.fixture
def celery_broker_cluster(celery_redis_broker: RedisTestBroker) -> CeleryBrokerCluster:
    """Redis only (pytest-celery's default also runs every test on RabbitMQ)."""
    cluster = CeleryBrokerCluster(celery_redis_broker)
    yield cluster
    cluster.teardown()


@pytest.fixture
def celery_backend_cluster() -> None:
    return None


@pytest.fixture
def celery_worker_cluster(celery_setup_worker) -> CeleryWorkerCluster:
    cluster = CeleryWorkerCluster(celery_setup_worker)
    yield cluster
    cluster.teardown()


@pytest.fixture
def default_worker_container_cls() -> type[CeleryWorkerContainer]:
    return ProjectWorker


@pytest.fixture(scope="session")
def default_worker_container_session_cls() -> type[CeleryWorkerContainer]:
    return ProjectWorker


@pytest.fixture
def celery_setup_cls() -> type[CeleryTestSetup]:
    return ProjectSetup


@pytest.fixture
def proxy(previews_on_docker, tmp_path, settings):
    """The engine behind a proxy the test controls; previews record its URL."""
    docker_url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    running = EngineProxy(tmp_path / "engine.sock", docker_url)
    settings.DOCKER_HOST = running.url
    engine_at.cache_clear()
    yield running
    running.close()


@pytest.fixture
def worker_mounts(proxy) -> dict:
    """The proxy's socket and the test database's socket directory, at the same paths."""
    database = connection.settings_dict
    database_sockets = Path(database["HOST"] or database["OPTIONS"].get("host", ""))
    if not database_sockets.is_absolute():
        pytest.fail("the worker container reaches the test database by its Unix socket only")
    return {
        str(path): {"bind": str(path), "mode": "rw"}
        for path in (proxy.path.parent, database_sockets)
    }


@pytest.fixture
def default_worker_env(
    default_worker_container_cls, celery_worker_cluster_config, proxy, settings
) -> dict:
    env = default_worker_container_cls.initial_env(celery_worker_cluster_config)
    env.pop("PYTHONPATH")  # the image's own (/app)
    return env | {
        "REDIS_URL": env["CELERY_BROKER_URL"],
        "DATABASE_URL": database_url_for_processes(),
        "SECRET_KEY": "tests-only-secret-key",
        "DOCKER_HOST": proxy.url,
        "PREVIEW_MANAGED_BY": settings.PREVIEW_MANAGED_BY,
        "PREVIEW_STOP_TIMEOUT_SECONDS": str(settings.PREVIEW_STOP_TIMEOUT_SECONDS),
        "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_SECONDS),
    }


def idle_preview(alice, session_id: str) -> Preview:
    session = session_with_running_preview(
        alice, session_id=session_id, idle_for=timedelta(hours=2)
    )
    return session.preview


def sweep_send(app):
    """A sweep as beat sends it: by name, routed by the project's settings."""
    return app.send_task("cleanup.sweep", kwargs={"trigger": "beat"})


def test_a_sweep_and_its_stops_run_on_the_queues_the_project_routes_them_to(
    celery_setup: CeleryTestSetup, alice, proxy, docker_client
):
    worker = celery_setup.worker
    preview = idle_preview(alice, "routed")

    sweep = sweep_send(celery_setup.app)

    worker.assert_log_exists(f"Task cleanup.sweep[{sweep.id}] succeeded", timeout=60)
    decision = wait_for(
        lambda: StopDecision.objects.filter(session_id="routed", outcome="stopped").first(),
        timeout=60,
        what="the stop to be done",
    )
    logs = worker.logs()
    assert f"task_id={sweep.id} queue=sweeps " in logs
    # The stop ran on the engine's queue. (This worker serves that queue too, so the sweep
    # listed the engine itself: tests/e2e/test_engines.py has a sweeps worker of its own.)
    assert "Task previews.list[" not in logs
    assert re.search(r"task_id=\S+ queue=engine\.local session=proj-1/routed ", logs), logs
    preview.refresh_from_db()
    assert preview.state == PreviewState.STOPPED
    assert decision.stop_reason == "inactive"
    label = f"kosuke.session_pk={preview.session_id}"
    (stopped,) = docker_client.containers.list(all=True, filters={"label": label})
    assert stopped.status == "exited"


def test_a_stop_retries_with_backoff_while_the_engine_refuses(
    celery_setup: CeleryTestSetup, alice, proxy
):
    worker = celery_setup.worker
    preview = idle_preview(alice, "refused")
    proxy.fail(b"/stop", times=2)  # the engine cuts the first two stop requests

    sweep_send(celery_setup.app)

    wait_for(
        lambda: StopDecision.objects.filter(session_id="refused", outcome="stopped").exists(),
        timeout=60,
        what="the stop to succeed on its third try",
    )
    assert proxy.failed == 2
    assert worker.logs().count("retry: Retry in") == 2
    preview.refresh_from_db()
    assert preview.state == PreviewState.STOPPED


def test_a_stop_cut_short_by_a_worker_restart_is_finished_after_it(
    celery_setup: CeleryTestSetup, alice, proxy
):
    worker = celery_setup.worker
    preview = idle_preview(alice, "restarted")
    proxy.hold(b"/stop")  # the engine takes its time with the stop

    sweep_send(celery_setup.app)
    wait_for(lambda: proxy.held, timeout=60, what="the stop to reach the engine")
    starts = worker.logs().count(" ready.")
    worker.kill()  # SIGKILL: the worker dies with the stop unacknowledged
    proxy.hold_no_more()
    worker.restart()
    wait_for(
        lambda: worker.logs().count(" ready.") > starts,
        timeout=60,
        what="the worker to be back",
    )

    wait_for(
        lambda: StopDecision.objects.filter(session_id="restarted", outcome="stopped").exists(),
        timeout=VISIBILITY_SECONDS * 6,
        what="the redelivered stop to finish",
    )
    preview.refresh_from_db()
    assert preview.state == PreviewState.STOPPED
