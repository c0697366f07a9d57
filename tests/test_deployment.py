"""docker-compose.yml and the Dockerfile say what production needs.

Their shape is checked here; tests/production builds nothing but runs the image and the
stack for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.production.compose import compose_command

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = {"web", "worker", "engine-local", "beat", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_names_every_service(compose):
    assert set(compose["services"]) == {"postgres", "redis", "migrate", *APP_SERVICES}
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_stores_keep_their_data_in_volumes(compose):
    assert set(compose["volumes"]) == {"postgres_data", "redis_data"}


def test_every_long_running_service_has_a_health_check_and_restarts(compose):
    for name, service in compose["services"].items():
        if name == "migrate":
            continue
        assert service["restart"] == "unless-stopped", name
        if name != "web":  # web uses the image's HEALTHCHECK (/healthz)
            assert service["healthcheck"]["test"], name


def test_app_services_wait_for_healthy_stores_and_the_migrations(compose):
    for name in APP_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_only_the_engines_workers_mount_the_docker_socket(compose):
    mounting = {
        name
        for name, service in compose["services"].items()
        if any("docker.sock" in str(volume) for volume in service.get("volumes", []))
    }
    assert mounting == {"engine-local"}
    engine = compose["services"]["engine-local"]
    assert engine["group_add"]
    assert engine["environment"]["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    # The sweeps worker reaches the engine through engine-local's queue alone.
    worker = compose["services"]["worker"]
    assert "group_add" not in worker
    assert "DOCKER_HOST" not in (worker.get("environment") or {})


def test_in_development_too_only_the_engines_worker_mounts_the_socket():
    dev = yaml.safe_load((ROOT / "docker-compose.dev.yml").read_text())
    mounting = {
        name
        for name, service in dev["services"].items()
        if any("docker.sock" in str(volume) for volume in service.get("volumes", []))
    }
    assert mounting == {"engine-local"}
    # It names services of the production file only (an override of a service gone, such
    # as the old `stops`, would start a service of its own).
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(dev["services"]) <= set(compose["services"])


def test_the_engines_worker_runs_on_threads_and_the_sweeps_on_processes(compose):
    engine = compose["services"]["engine-local"]["command"]
    assert engine[engine.index("-Q") + 1] == "engine.local"
    assert engine[engine.index("-P") + 1] == "threads"
    assert engine[engine.index("-c") + 1] == "${ENGINE_CONCURRENCY:-100}"
    assert engine[engine.index("-n") + 1] == "engine-local@%h"
    # Its health check pings the worker by the name it was given.
    assert "engine-local@$$HOSTNAME" in " ".join(
        compose["services"]["engine-local"]["healthcheck"]["test"]
    )
    worker = compose["services"]["worker"]["command"]
    assert worker[worker.index("-Q") + 1] == "sweeps"
    assert "-P" not in worker


def test_shutdowns_have_time_for_a_warm_stop(compose):
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert grace == "6m"
    assert all("stop_grace_period" in compose["services"][name] for name in APP_SERVICES)


def test_one_beat_and_a_protected_flower(compose):
    assert compose["services"]["beat"]["deploy"]["replicas"] == 1
    flower = compose["services"]["flower"]
    # Flower takes its password from the environment: never on the command line (ps).
    assert "--basic-auth" not in " ".join(flower["command"])
    assert flower["ports"] == ["${FLOWER_BIND:-127.0.0.1:5555}:5555"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]


def test_the_dockerfile_is_multi_stage_non_root_locked_and_checked():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 2
    assert "uv export --frozen --no-dev" in dockerfile and "--require-hashes" in dockerfile
    assert re.search(r"^ARG PYTHON_IMAGE=python:3.11-slim$", dockerfile, re.MULTILINE)
    assert "collectstatic --noinput" in dockerfile
    assert re.search(r"^USER kosuke$", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


def test_every_setting_is_documented_in_env_example():
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', (ROOT / "kosuke/settings.py").read_text()))
    # The run command's own settings (ports, where it keeps its state), too.
    run_command = (ROOT / "kosuke/dev.py").read_text()
    read |= set(re.findall(r'os\.environ\.(?:get|setdefault)\(\s*"([A-Z_]+)"', run_command))
    assert read - documented - {"DJANGO_SETTINGS_MODULE"} == set()


@pytest.mark.parametrize(
    "files",
    [
        ["docker-compose.yml"],
        ["docker-compose.yml", "docker-compose.dev.yml"],
        ["docker-compose.yml", "docker-compose.local.yml"],
    ],
)
def test_compose_accepts_the_files(tmp_path, files):
    command = compose_command()
    if command is None:
        message = "neither docker compose nor docker-compose is installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for name in files:
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nFLOWER_BASIC_AUTH=a:b\nSECRET_KEY=x\n")
    selected = [option for name in files for option in ("-f", name)]

    result = subprocess.run(
        [*command, *selected, "config", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr


def test_the_run_command_runs_one_engine_worker_per_engine(tmp_path, monkeypatch):
    from kosuke import dev

    monkeypatch.setattr(dev, "STATE_DIR", tmp_path)

    procfile = dev._procfile(["a", "b"]).read_text().splitlines()

    names = [line.split(":", 1)[0] for line in procfile if not line.startswith("#")]
    assert names == ["web", "worker", "engine-a", "engine-b", "beat", "flower"]
    engine_b = next(line for line in procfile if line.startswith("engine-b:"))
    assert "-Q engine.b -P threads -c $ENGINE_CONCURRENCY -n engine-b@%h" in engine_b
