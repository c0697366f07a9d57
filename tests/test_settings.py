"""Production settings: refuse to start without a secret, and pass Django's deploy checks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DEBUG": "false", **env}
    environment.pop("SECURE_SSL_REDIRECT")  # the production default, not the tests'
    if not env.get("SECRET_KEY"):
        environment.pop("SECRET_KEY", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check")

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_production_settings_pass_the_deploy_checks():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
    )

    assert result.returncode == 0, result.stderr


def test_the_deploy_checks_miss_no_protective_middleware(settings):
    from kosuke.checks import middleware_in_place

    assert middleware_in_place(None) == []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("CsrfViewMiddleware")]

    [warning] = middleware_in_place(None)
    assert warning.id == "kosuke.W001" and "security.W003" in warning.msg
