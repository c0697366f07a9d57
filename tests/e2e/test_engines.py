"""End to end over two real Docker engines, each served by its own worker process.

The second `dockerd` runs with `--bridge=none` (two engines on one machine would fight
over docker0), so its previews run with `network_mode=none` (PREVIEW_ENGINES says so).
Each engine worker is given the other engine's URL pointing nowhere: a worker that touched
an engine it does not serve would fail. One engine's worker is killed twice: before a
sweep (its previews wait, undecided, the other engine's stop) and in the middle of its
stops (they are carried out once it is back).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta as td

import docker
import pytest
from django.utils import timezone

from chat.models import ChatSession
from cleanup.models import StopDecision
from cleanup.tasks import sweep_task
from kosuke.errors import ApplicationError
from kosuke.health import engine_reports, engines_state
from previews.engine import LABEL_MANAGED_BY, engine_at
from previews.engines import DEFAULT_SOCKET
from previews.models import Preview, PreviewState
from previews.remote import preview_ask
from previews.services import PreviewAction
from tests.builders import chat_session_create
from tests.e2e.processes import Processes
from tests.polling import wait_for
from tests.preview_image import IGNORE_SIGTERM, preview_image_build
from tests.procfile import procfile_command

NOWHERE = "unix:///nonexistent/docker.sock"


@pytest.fixture
def second_engine(previews_on_docker, preview_image, settings):
    """A Docker client of the second engine (KOSUKE_SECOND_DOCKER_HOST; .ci/run starts
    one), with the preview image; its containers of this run go afterwards. There the
    image's server ignores SIGTERM: each stop takes the whole stop timeout, so a worker
    can die in the middle of one."""
    url = os.environ.get("KOSUKE_SECOND_DOCKER_HOST")
    if not url:
        message = "no second Docker engine: set KOSUKE_SECOND_DOCKER_HOST (.ci/run starts one)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    client = docker.DockerClient(base_url=url, timeout=30)
    client.ping()
    preview_image_build(client, tag=preview_image, command=IGNORE_SIGTERM)
    yield client
    label = f"{LABEL_MANAGED_BY}={settings.PREVIEW_MANAGED_BY}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)


def _engines(one: str, two: str) -> str:
    return f"one={one}?capacity=2,two={two}?capacity=3&network=none"


def _engine_worker(processes: Processes, name: str, engines: str):
    processes.env["PREVIEW_ENGINES"] = engines
    command = procfile_command("engine", KOSUKE_ENGINE=name, ENGINE_CONCURRENCY="4")
    return processes.start(f"engine-{name}", *command.split()[3:])


def _containers(client, session: ChatSession) -> list:
    return client.containers.list(all=True, filters={"label": f"kosuke.session_pk={session.pk}"})


def _stops_logged(processes: Processes, name: str) -> int:
    log = (processes.log_dir / f"engine-{name}.log").read_text(errors="replace")
    return len(re.findall(rf"queue=engine\.{name} session=\S+ msg=\"stop \S+: stopped", log))


def test_previews_spread_by_capacity_and_each_engine_s_workers_stop_its_own(
    processes, second_engine, previews_on_docker, alice, settings
):
    first_url = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    second_url = os.environ["KOSUKE_SECOND_DOCKER_HOST"]
    settings.PREVIEW_ENGINES = _engines(first_url, second_url)
    engine_at.cache_clear()
    processes.env |= {"DOCKER_TIMEOUT_SECONDS": "4", "CLEANUP_THRESHOLD_MINUTES": "30"}
    _engine_worker(processes, "one", _engines(first_url, NOWHERE))
    worker_two = _engine_worker(processes, "two", _engines(NOWHERE, second_url))
    processes.env["PREVIEW_ENGINES"] = settings.PREVIEW_ENGINES
    processes.start("worker", *procfile_command("worker").split()[3:])  # the sweeps
    # Each engine worker reports on its engine when it is ready: placement goes by that.
    wait_for(
        lambda: {name for name, r in engine_reports().items() if r["ok"]} == {"one", "two"},
        timeout=60,
        what="both engine workers to report their engine",
    )

    # The web's side: each open goes to the engine with the most room (two, then one, ...).
    sessions = [chat_session_create(alice, session_id=f"s{n}") for n in range(5)]
    for session in sessions:
        assert preview_ask(session=session, action=PreviewAction.OPEN)["state"] == "running"
    placed = {s.session_id: Preview.objects.get(session=s).engine for s in sessions}
    assert placed == {"s0": "two", "s1": "one", "s2": "two", "s3": "one", "s4": "two"}
    first = docker.DockerClient(base_url=first_url, timeout=30)
    for session in sessions:
        on_one, on_two = _containers(first, session), _containers(second_engine, session)
        held, other = (on_one, on_two) if placed[session.session_id] == "one" else (on_two, on_one)
        assert [c.status for c in held] == ["running"] and other == []
    assert {c.attrs["HostConfig"]["NetworkMode"] for c in second_engine.containers.list()} >= {
        "none"
    }
    full = chat_session_create(alice, session_id="full")
    with pytest.raises(ApplicationError, match="every Docker engine is full") as refused:
        preview_ask(session=full, action=PreviewAction.OPEN)
    assert refused.value.status == 503

    # All idle; engine two's workers die: one's previews stop, two's wait.
    ChatSession.objects.update(last_activity_at=timezone.now() - td(hours=1))
    processes.kill(worker_two)
    sweep_task.delay()
    on_one = [s for s in sessions if placed[s.session_id] == "one"]
    on_two = [s for s in sessions if placed[s.session_id] == "two"]
    wait_for(
        lambda: StopDecision.objects.filter(outcome="stopped").count() == len(on_one),
        timeout=60,
        what="engine one's previews to stop",
    )
    assert {Preview.objects.get(session=s).state for s in on_two} == {PreviewState.RUNNING}
    assert all(c.status == "running" for s in on_two for c in _containers(second_engine, s))
    assert engines_state()["one"] == "up"
    assert engines_state()["two"].startswith("down: no worker of engine two answered")

    # Its workers come back: the next sweep hands out two's stops; its worker dies again
    # in the middle of them (each takes the 6 s stop timeout there) and comes back: the
    # stops it held are carried out after all, once each.
    worker_two = _engine_worker(processes, "two", _engines(NOWHERE, second_url))
    wait_for(lambda: engines_state()["two"] == "up", timeout=60, what="engine two up again")
    sweep_task.delay()
    wait_for(
        lambda: Preview.objects.filter(state=PreviewState.STOPPING).count() == len(on_two),
        timeout=60,
        what="engine two's stops under way",
        every=0.05,
    )
    processes.kill(worker_two)  # SIGKILL, mid-stop
    assert StopDecision.objects.filter(outcome="pending").count() == len(on_two)
    _engine_worker(processes, "two", _engines(NOWHERE, second_url))
    wait_for(
        lambda: StopDecision.objects.filter(outcome="stopped").count() == len(sessions),
        timeout=90,
        what="engine two's stops to be carried out after its worker came back",
    )
    assert {Preview.objects.get(session=s).state for s in sessions} == {PreviewState.STOPPED}
    assert all(c.status == "exited" for s in on_two for c in _containers(second_engine, s))
    assert StopDecision.objects.count() == len(sessions)  # each stop decided once
    # Each stop was carried out by the workers of its own engine.
    wait_for(lambda: _stops_logged(processes, "one") == 2, timeout=10, what="one's stops logged")
    wait_for(lambda: _stops_logged(processes, "two") == 3, timeout=10, what="two's stops logged")
