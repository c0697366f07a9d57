"""Test harness: real PostgreSQL, Redis and Docker.

PostgreSQL and Redis start when pytest imports this file (unless DATABASE_URL / REDIS_URL
are set), before any other conftest or test module: the settings read their URLs from the
environment once, and Django is set up right after. Docker is the engine at DOCKER_HOST
(or the default socket); tests that need it fail in CI when none answers, and are skipped
with the reason elsewhere. The preview image is built locally: no registry is reachable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

import django
import pytest

from kosuke import embedded

_postgres = None
_redis_process = None
_redis_dir: Path | None = None


def _start_services_and_django() -> None:
    global _postgres, _redis_process, _redis_dir

    state_dir = Path(tempfile.mkdtemp(prefix="kosuke-tests-"))
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"], _postgres = embedded.postgres_start(
            state_dir / "pg", delete_on_exit=True
        )
    if not os.environ.get("REDIS_URL"):
        _redis_dir = state_dir / "redis"
        os.environ["REDIS_URL"], _redis_process = embedded.redis_start(
            _redis_dir, port=embedded.free_port(), persist=False
        )
    os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
    # Preview containers of this run carry their own label, so cleanup after each test
    # (and other runs sharing the engine) never touch anything else.
    os.environ["PREVIEW_MANAGED_BY"] = f"kosuke-tests-{os.getpid()}"
    # Tests speak plain HTTP to the app; production redirects to HTTPS.
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    os.environ["DJANGO_SETTINGS_MODULE"] = "kosuke.settings"

    django.setup()


_start_services_and_django()

from django.test import Client  # noqa: E402 - needs Django set up

from tests.builders import api_client, user_create  # noqa: E402
from tests.preview_image import preview_image_build  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    if _postgres is not None:
        _postgres.cleanup()
    if _redis_process is not None:
        _redis_process.terminate()
        _redis_process.wait(timeout=10)
        shutil.rmtree(_redis_dir, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from django.conf import settings

    database = settings.DATABASES["default"]
    return [f"postgres: {database['HOST'] or 'localhost'} / redis: {settings.REDIS_URL}"]


@pytest.fixture(autouse=True)
def _fresh_redis() -> None:
    """Every test starts with an empty Redis database, and no API token remembered."""
    from chat.tokens import api_tokens_forget
    from kosuke.redis_client import redis_client

    redis_client().flushdb()
    api_tokens_forget()


@pytest.fixture(autouse=True)
def _static_files_without_manifest(settings) -> None:
    """Pages render without a collectstatic run; production serves hashed, compressed files."""
    settings.STATIC_ROOT = None
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # The web process the tests serve (tests.asgi_server) finds them in the apps.
    settings.WHITENOISE_USE_FINDERS = settings.WHITENOISE_AUTOREFRESH = True


def _service_missing(reason: str) -> NoReturn:
    """In CI a missing service fails the test; elsewhere it is skipped, with the reason."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    """A raw Docker SDK client: the tests' own view of the engine, independent of the app's."""
    import docker

    url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=url, timeout=30)
        client.ping()
    except Exception as exc:
        _service_missing(f"no Docker engine answers at {url}: {exc}")
    return client


@pytest.fixture(scope="session")
def preview_image(docker_client) -> str:
    """A tiny preview image: static busybox serving HTTP on port 3000, built by `docker import`."""
    try:
        return preview_image_build(docker_client)
    except FileNotFoundError as exc:
        _service_missing(str(exc))


@pytest.fixture
def previews_on_docker(docker_client, preview_image, settings):
    """Previews run on the real engine with the test image; their containers go afterwards."""
    from previews.engine import LABEL_MANAGED_BY, engine_at

    settings.PREVIEW_IMAGE = preview_image
    settings.PREVIEW_STOP_TIMEOUT_SECONDS = 2
    label = f"{LABEL_MANAGED_BY}={settings.PREVIEW_MANAGED_BY}"

    def remove_ours() -> None:
        for container in docker_client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)

    remove_ours()  # left by a run that died, whose pid this run happens to have
    engine_at.cache_clear()
    yield docker_client
    engine_at.cache_clear()
    remove_ours()


@pytest.fixture
def alice(db):
    return user_create("alice")


@pytest.fixture
def bob(db):
    return user_create("bob")


@pytest.fixture
def alice_api(alice) -> Client:
    return api_client(alice)


@pytest.fixture
def bob_api(bob) -> Client:
    return api_client(bob)


@pytest.fixture
def operator(client):
    """A client logged in as a staff superuser."""
    client.force_login(user_create("operator", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def worker(transactional_db, previews_on_docker):
    """A real Celery worker in this process (threads), consuming every queue from Redis: the
    sweeps' and those of the engines tests configure."""
    from celery.contrib.testing.worker import start_worker

    from kosuke.celery import app
    from previews.engines import engine_queue
    from tests.engines import TEST_ENGINES

    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        queues=["sweeps", *(engine_queue(name) for name in TEST_ENGINES)],
        perform_ping_check=False,
        shutdown_timeout=60,
    ) as running_worker:
        yield running_worker


@pytest.fixture
def asgi_server(transactional_db):
    """The ASGI app served by uvicorn in this process (rows the test writes are committed)."""
    from tests.asgi_server import AsgiServer

    with AsgiServer().running() as server:
        yield server
