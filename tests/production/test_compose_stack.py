"""The production path for real: `docker compose up -d` of docker-compose.yml with the image
`scripts/build-image` built, then what an operator does and sees, from the host.

The tests run in order on one stack (it takes a minute to become healthy): the stores and
the migrations, a preview stopped by beat and the workers, the admin's static files,
Flower, every health check, and last a `docker compose stop` during a stop.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from urllib.parse import urlparse

import docker
import pytest

from kosuke.embedded import free_port
from tests.conftest import _service_missing
from tests.polling import wait_for
from tests.preview_image import IGNORE_SIGTERM, preview_image_build
from tests.production.compose import (
    APP_IMAGE,
    LOCAL_STORE_IMAGES,
    TIMINGS,
    ComposeStack,
    compose_command,
    elapsed,
)

PROJECT = "compose-smoke"
FLOWER_USER, FLOWER_PASSWORD = "ops", secrets.token_urlsafe(12)
STOP_TIMEOUT_SECONDS = 8
APP_SERVICES = ("web", "worker", "engine-local", "beat", "flower")


@pytest.fixture(scope="module")
def stack(docker_client, tmp_path_factory):
    command = compose_command()
    if command is None:
        _service_missing("neither docker compose nor docker-compose is installed")
    for image in (APP_IMAGE, *LOCAL_STORE_IMAGES):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            _service_missing(f"no image {image}: run scripts/build-image --local-bases first")
    # A dev server that ignores SIGTERM: every stop takes the stop timeout, so one can be
    # caught in flight.
    try:
        preview_image = preview_image_build(
            docker_client, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
        )
    except FileNotFoundError as exc:
        _service_missing(str(exc))
    url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    socket = urlparse(url).path
    managed_by = f"kosuke-compose-{os.getpid()}"
    settings = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        "WEB_BIND": f"127.0.0.1:{free_port()}",
        "FLOWER_BIND": f"127.0.0.1:{free_port()}",
        "DOCKER_SOCKET": socket,
        "DOCKER_GID": str(os.stat(socket).st_gid),
        "PREVIEW_IMAGE": preview_image,
        "PREVIEW_MANAGED_BY": managed_by,
        "PREVIEW_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT_SECONDS),
        "CLEANUP_INTERVAL_SECONDS": "3",
    }
    running = ComposeStack(
        tmp_path_factory.mktemp("compose"), f"kosuke-test-{os.getpid()}", settings, command
    )
    running.down()  # left by a run that died, whose pid this run happens to have
    try:
        running.up()
        TIMINGS["docker compose up -d returned"] = elapsed(running.started)
        _stores_migrated_and_web_ready(running, docker_client)
        TIMINGS["/readyz ready"] = elapsed(running.started)
        yield running
    finally:
        label = f"kosuke.managed_by={managed_by}"
        for container in docker_client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        running.down()


@pytest.fixture(scope="module")
def api(stack):
    """A client of the JSON API with a token made by `manage.py create_api_token`."""
    stack.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        "ops",
        "--email",
        "ops@example.com",
        env={"DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16)},
    )
    token = stack.manage("create_api_token", "ops", "--name", "compose smoke test")
    assert token.startswith("ksk_"), token

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, _headers, content = stack.request(
            method,
            f"{stack.web}/api/projects/{PROJECT}{path}",
            body=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        return status, json.loads(content) if content else {}

    return call


def preview_running(api, session_id: str) -> dict:
    """Create a session, open its preview, and wait until its container runs."""
    status, _ = api("POST", "/chat-sessions", {"session_id": session_id})
    assert status == 201
    status, preview = api("POST", f"/chat-sessions/{session_id}/preview")
    assert status == 200, preview
    return wait_for(
        lambda: (
            (answer := api("GET", f"/chat-sessions/{session_id}/preview")[1])["state"] == "running"
            and answer
        ),
        timeout=60,
        what=f"the preview of {session_id} to run",
    )


def session_age(stack, session_id: str) -> None:
    """Move the session's last activity two hours back, as if nobody had used it since."""
    stack.manage(
        "shell",
        "-c",
        "from datetime import timedelta\n"
        "from django.utils import timezone\n"
        "from chat.models import ChatSession\n"
        f"ChatSession.objects.filter(project_id={PROJECT!r}, session_id={session_id!r})"
        ".update(last_activity_at=timezone.now() - timedelta(hours=2))",
    )


def _stores_migrated_and_web_ready(stack, docker_client) -> None:
    wait_for(
        lambda: (
            (states := stack.health(docker_client)).get("postgres") == "healthy"
            and states.get("redis") == "healthy"
            and states.get("migrate") == "exited 0"
        ),
        timeout=120,
        what="postgres and redis healthy and migrate exited 0",
    )
    wait_for(
        lambda: stack.request("GET", f"{stack.web}/readyz")[0] == 200,
        timeout=60,
        what="/readyz to answer 200",
        every=0.5,
    )


def test_the_web_is_ready_once_the_stores_are_up_and_migrated(stack):
    status, _headers, content = stack.request("GET", f"{stack.web}/readyz")

    assert status == 200
    ready = json.loads(content)
    assert ready["status"] == "ready"
    assert all(check["ok"] for check in ready["checks"].values()), ready


def test_beat_and_the_workers_stop_an_idle_preview(stack, api, docker_client):
    # The engine's worker runs as uid 10001 and reaches the engine through the socket's
    # group; the sweeps worker has no socket at all.
    identity = stack.compose("exec", "-T", "engine-local", "id").strip()
    assert "uid=10001(kosuke)" in identity
    assert re.search(rf"groups=.*\b{stack.settings['DOCKER_GID']}\b", identity), identity
    assert "uid=10001(kosuke)" in stack.compose("exec", "-T", "worker", "id")
    socket_check = "test -e /var/run/docker.sock && echo mounted || echo none"
    assert stack.compose("exec", "-T", "worker", "sh", "-c", socket_check).strip() == "none"

    preview = preview_running(api, "idle")
    (container,) = preview["containers"]
    assert docker_client.containers.get(container["id"]).status == "running"
    # People's preview requests run on the engine's worker.
    assert re.search(
        r"queue=engine\.local msg=\"Task previews\.request\[", stack.logs("engine-local")
    )

    session_age(stack, "idle")

    stopped = wait_for(
        lambda: (
            (answer := api("GET", "/chat-sessions/idle/preview")[1])["state"] == "stopped"
            and answer
        ),
        timeout=60,
        what="beat's sweep and the engine's worker to stop the idle preview",
    )
    assert re.search(r"queue=sweeps ", stack.logs("worker"))  # the sweeps decide
    assert re.search(
        r"queue=engine\.local session=\S+ msg=\"stop \S+/idle: stopped",
        stack.logs("engine-local"),
    )
    assert stopped["last_stop_reason"] == "inactive"
    assert docker_client.containers.get(container["id"]).status == "exited"
    decisions = stack.sql(
        "select stop_reason, outcome from cleanup_stopdecision "
        "where session_id = 'idle' and project_id = :'project'",
        project=PROJECT,
    )
    assert decisions == "inactive|stopped"


def test_the_admin_serves_its_static_files(stack):
    status, _headers, page = stack.request("GET", f"{stack.web}/admin/login/")
    assert status == 200
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page.decode())
    assert stylesheets, "the login page links no stylesheet"

    for path in stylesheets:
        status, headers, content = stack.request("GET", f"{stack.web}{path}")
        assert status == 200, path
        assert headers["content-type"].startswith("text/css"), path
        assert content


def test_flower_answers_behind_basic_auth_and_lists_the_workers(stack):
    status, _headers, _content = wait_for(
        lambda: (answer := stack.request("GET", f"{stack.flower}/api/workers"))[0] and answer,
        timeout=60,
        what="Flower to answer",
        every=0.5,
    )
    assert status == 401

    credentials = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()

    def workers_queues() -> dict[str, list[str]]:
        """The workers Flower lists, by the name before `@`, with the queues they consume."""
        status, _headers, content = stack.request(
            "GET",
            f"{stack.flower}/api/workers?refresh=1",
            headers={"Authorization": f"Basic {credentials}"},
        )
        if status != 200:
            return {}
        return {
            name.split("@")[0]: sorted(queue["name"] for queue in info.get("active_queues") or [])
            for name, info in json.loads(content).items()
        }

    # The sweeps worker (celery@) and engine local's (engine-local@), each on its queue.
    expected = {"celery": ["sweeps"], "engine-local": ["engine.local"]}
    wait_for(
        lambda: workers_queues() == expected,
        timeout=60,
        what=f"Flower to list both workers: {expected}",
        every=1,
    )


def test_every_service_becomes_healthy(stack, docker_client):
    expected = {
        "postgres": "healthy",
        "redis": "healthy",
        "migrate": "exited 0",
        **dict.fromkeys(APP_SERVICES, "healthy"),
    }
    # Docker runs a first check one interval after the start (30 s for beat, web, worker).
    wait_for(
        lambda: stack.health(docker_client) == expected,
        timeout=180,
        what=f"every service healthy: {expected}",
        every=1,
    )
    TIMINGS["every service healthy"] = elapsed(stack.started)


def test_compose_stop_lets_the_engine_worker_finish_the_stop_in_flight(stack, api, docker_client):
    preview = preview_running(api, "in-flight")
    (container,) = preview["containers"]
    session_age(stack, "in-flight")
    wait_for(
        lambda: api("GET", "/chat-sessions/in-flight/preview")[1]["state"] == "stopping",
        timeout=30,
        what="the stop to be under way",
        every=0.1,
    )

    stopping = time.monotonic()
    stack.compose("stop", timeout=420)
    TIMINGS["docker compose stop (from its start)"] = elapsed(stopping)
    # The engine's worker waited for the engine's stop timeout to run out, SIGTERM ignored.
    assert time.monotonic() - stopping >= STOP_TIMEOUT_SECONDS / 2

    engine_worker = docker_client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={stack.name}",
                "com.docker.compose.service=engine-local",
            ]
        },
    )[0]
    logs = stack.logs("engine-local")
    assert engine_worker.attrs["State"]["ExitCode"] == 0, logs[-3000:]
    # The stop finished after the warm shutdown began: it was in flight when SIGTERM came.
    assert logs.index("Warm shutdown") < logs.index(f"stop {PROJECT}/in-flight: stopped")
    assert docker_client.containers.get(container["id"]).status == "exited"

    stack.compose("start", "postgres")
    wait_for(
        lambda: stack.health(docker_client)["postgres"] == "healthy",
        timeout=60,
        what="postgres healthy again",
    )
    state = stack.sql(
        "select p.state from previews_preview p join chat_chatsession s on s.id = p.session_id "
        "where s.session_id = 'in-flight' and s.project_id = :'project'",
        project=PROJECT,
    )
    assert state == "stopped"
