"""Test harness: real PostgreSQL and Redis, started here unless DATABASE_URL / REDIS_URL are set.

The servers start when pytest imports this file, before any other conftest or test module:
the settings read their URLs from the environment once, and Django is set up right after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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
    # Tests speak plain HTTP to the app; production redirects to HTTPS.
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    os.environ["DJANGO_SETTINGS_MODULE"] = "kosuke.settings"

    django.setup()


_start_services_and_django()


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
    """Every test starts with an empty Redis database."""
    from kosuke.redis_client import redis_client

    redis_client().flushdb()


@pytest.fixture(autouse=True)
def _static_files_without_manifest(settings) -> None:
    """Pages render without a collectstatic run; production serves hashed, compressed files."""
    settings.STATIC_ROOT = None
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
