"""/healthz, /readyz and `manage.py healthcheck`: each dependency's failure is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from kosuke.health import BEAT_HEARTBEAT_KEY, engine_reports_record, engines_report_now
from kosuke.redis_client import redis_client
from previews.engine import engine_at

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def test_healthz_answers_whatever_the_host(client):
    response = client.get("/healthz", headers={"Host": "not-in-allowed-hosts.example"})

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_everything_answers(client, previews_on_docker):
    engines_report_now(["local"])  # what a worker does when it starts (and each sweep does)

    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["down"] == []
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "redis": True,
        "docker": True,
    }
    assert body["checks"]["docker"]["engines"] == {"local": "up"}


def test_readyz_stays_ready_while_one_engine_is_up_and_names_the_one_down(client, settings):
    settings.PREVIEW_ENGINES = "a=unix:///run/a.sock,b=unix:///run/b.sock"
    engine_reports_record(reached=["a"], unreachable={"b": "no worker of engine b answered"})

    response = client.get("/readyz")

    assert response.status_code == 200
    engines = response.json()["checks"]["docker"]["engines"]
    assert engines == {"a": "up", "b": "down: no worker of engine b answered"}

    engine_reports_record(reached=[], unreachable={"a": "engine a unreachable"})
    response = client.get("/readyz")

    assert response.status_code == 503
    error = response.json()["checks"]["docker"]["error"]
    assert "engine a down: engine a unreachable" in error
    assert "engine b down: no worker of engine b answered" in error


def test_readyz_names_an_unreachable_docker_engine(client, settings, tmp_path):
    settings.DOCKER_HOST = f"unix://{tmp_path}/docker.sock"
    engine_at.cache_clear()
    engines_report_now(["local"])  # what a worker does when it starts (and each sweep does)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["docker"]
    assert settings.DOCKER_HOST in response.json()["checks"]["docker"]["error"]


def test_readyz_names_a_redis_that_is_down(client, settings, previews_on_docker, caplog):
    # Redis also carries the workers' engine reports: both are named.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
    redis_client.cache_clear()
    try:
        with caplog.at_level("INFO"):
            response = client.get("/readyz")
    finally:
        redis_client.cache_clear()

    assert response.status_code == 503
    assert response.json()["down"] == ["redis", "docker"]
    # One warning, not an ERROR per poll (load balancers poll it while things start).
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [("WARNING", "not ready: redis, docker down")]


def test_readyz_names_a_database_that_is_down(tmp_path):
    probe = (
        "import django, json; django.setup(); from django.test import Client;"
        "r = Client().get('/readyz'); print(r.status_code, json.dumps(r.json()))"
    )
    env = {**os.environ, "DATABASE_URL": f"postgres://nobody@/db?host={tmp_path}"}
    env["DJANGO_SETTINGS_MODULE"] = "kosuke.settings"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    status, body = result.stdout.split(" ", 1)
    assert status == "503", result.stderr
    assert "database" in json.loads(body)["down"]


def test_the_web_healthcheck_command_lists_each_dependency(previews_on_docker, capsys):
    engines_report_now(["local"])
    call_command("healthcheck", "web")

    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == ["database", "redis", "docker"]


def test_beat_is_healthy_while_it_sends_tasks(settings):
    settings.CLEANUP_INTERVAL_SECONDS = 60
    redis_client().set(BEAT_HEARTBEAT_KEY, time.time() - 30)

    call_command("healthcheck", "beat")


@pytest.mark.parametrize("silent_for", [None, 181])
def test_beat_is_unhealthy_when_it_went_quiet(settings, silent_for):
    settings.CLEANUP_INTERVAL_SECONDS = 60
    if silent_for:
        redis_client().set(BEAT_HEARTBEAT_KEY, time.time() - silent_for)

    with pytest.raises(CommandError, match="beat last sent a task"):
        call_command("healthcheck", "beat")


def test_readyz_says_when_no_worker_reported_on_the_engine(client):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["docker"]
    error = response.json()["checks"]["docker"]["error"]
    assert "engine local down: no worker reported on it" in error


def test_an_old_engine_report_does_not_count(client, settings, previews_on_docker, monkeypatch):
    engines_report_now(["local"])
    monkeypatch.setattr("kosuke.health.time.time", lambda: time.monotonic() + 10**10)

    assert client.get("/readyz").json()["down"] == ["docker"]


def test_an_engine_report_older_than_two_intervals_and_a_docker_timeout_does_not_count(
    client, settings, previews_on_docker, monkeypatch
):
    settings.CLEANUP_INTERVAL_SECONDS, settings.DOCKER_TIMEOUT_SECONDS = 5, 3
    engines_report_now(["local"])
    reported_at = time.time()
    monkeypatch.setattr("kosuke.health.time.time", lambda: reported_at + 12.5)
    assert client.get("/readyz").json()["down"] == []

    monkeypatch.setattr("kosuke.health.time.time", lambda: reported_at + 13.5)
    assert client.get("/readyz").json()["down"] == ["docker"]
