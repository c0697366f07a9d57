"""PREVIEW_ENGINES read, and where a preview's work goes (placement)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from kosuke.errors import ApplicationError
from kosuke.health import engine_reports_record
from previews.engines import EngineConfig, EngineConfigError, engines_parse
from previews.models import Preview, PreviewState
from previews.placement import engine_place, engines_free, preview_engine
from previews.remote import preview_ask
from previews.services import PreviewAction
from tests.builders import chat_session_create
from tests.e2e.processes import ROOT


def _parse(text: str) -> dict[str, EngineConfig]:
    return engines_parse(text, default_url="unix:///var/run/docker.sock", default_capacity=200)


def test_without_engines_there_is_one_named_local_at_docker_host():
    assert _parse("") == {"local": EngineConfig("local", "unix:///var/run/docker.sock", 200)}


def test_engines_are_read_with_their_capacity_network_and_labels():
    engines = _parse(
        "a=unix:///run/a.sock, b=tcp://10.0.0.7:2375?capacity=500&network=none"
        "&label=zone:b&label=tier:free"
    )

    assert list(engines) == ["a", "b"]
    assert engines["a"] == EngineConfig("a", "unix:///run/a.sock", 200)
    assert engines["b"] == EngineConfig(
        "b", "tcp://10.0.0.7:2375", 500, network="none", labels=(("zone", "b"), ("tier", "free"))
    )
    assert engines["b"].queue == "engine.b"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("unix:///run/a.sock", "is not name=url"),
        ("A=unix:///run/a.sock", "engine name 'A' must be lowercase"),
        ("a=unix:///x,a=unix:///y", "engine 'a' is named twice"),
        ("a=unix:///x?capacity=0", "capacity must be a positive whole number"),
        ("a=unix:///x?cpus=2", "unknown setting(s) cpus"),
        ("a=unix:///x?label=zone", "label 'zone' is not key:value"),
        (" , ", "names no engine"),
    ],
)
def test_a_bad_engine_list_says_what_is_wrong(text, says):
    with pytest.raises(EngineConfigError, match=f"^PREVIEW_ENGINES.*{re.escape(says)}"):
        _parse(text)


def test_a_bad_engine_list_stops_the_start_with_one_line():
    env = {**os.environ, "PREVIEW_ENGINES": "a=unix:///x?capacity=none"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert result.stderr.strip() == (
        "manage.py: PREVIEW_ENGINES: engine 'a': capacity must be a positive whole number"
    )


@pytest.fixture
def two_engines(settings):
    settings.PREVIEW_ENGINES = "a=unix:///run/a.sock?capacity=2,b=unix:///run/b.sock?capacity=3"


def _running_on(owner, engine: str, count: int) -> None:
    for n in range(count):
        session = chat_session_create(owner, session_id=f"{engine}-{n}")
        Preview.objects.create(session=session, state=PreviewState.RUNNING, engine=engine)


def test_a_new_preview_goes_to_the_engine_with_the_most_room(db, two_engines, alice):
    engine_reports_record(reached=["a", "b"], unreachable={})
    assert engine_place().name == "b"  # 3 free against 2

    _running_on(alice, "b", 2)
    Preview.objects.create(
        session=chat_session_create(alice, session_id="old"), state=PreviewState.STOPPED, engine="b"
    )  # stopped: takes no room
    assert engines_free() == {"a": 2, "b": 1}
    assert engine_place().name == "a"


def test_an_engine_down_gets_no_new_previews(db, two_engines, alice):
    engine_reports_record(reached=["a"], unreachable={"b": "no worker of engine b answered"})

    assert engine_place().name == "a"

    engine_reports_record(reached=[], unreachable={"a": "unreachable"})
    with pytest.raises(ApplicationError, match="no Docker engine is up") as refused:
        engine_place()
    assert refused.value.status == 503


def test_with_no_fresh_report_every_engine_may_take_a_new_preview(
    db, two_engines, alice, monkeypatch
):
    # Beat or the sweeps worker stopped for a while: the reports went stale, the engines
    # did not go down. The request itself says if an engine's workers do not answer.
    engine_reports_record(reached=["a"], unreachable={"b": "unreachable"})
    later = time.time() + 10**6
    monkeypatch.setattr("kosuke.health.time.time", lambda: later)

    assert engine_place().name == "b"


def test_a_full_platform_answers_503_and_records_nothing(db, two_engines, alice):
    engine_reports_record(reached=["a", "b"], unreachable={})
    _running_on(alice, "a", 2)
    _running_on(alice, "b", 3)
    session = chat_session_create(alice, session_id="new")

    with pytest.raises(ApplicationError, match=r"every Docker engine is full \(5 previews") as full:
        preview_ask(session=session, action=PreviewAction.OPEN)

    assert full.value.status == 503
    assert not Preview.objects.filter(session=session).exists()


def test_reopening_goes_to_the_engine_holding_the_container(db, two_engines, alice):
    engine_reports_record(reached=["a", "b"], unreachable={})
    session = chat_session_create(alice, session_id="s")
    Preview.objects.create(session=session, state=PreviewState.STOPPED, engine="a")

    assert preview_engine(session, placing=True) == "a"  # although b has more room


def test_a_preview_whose_containers_no_engine_holds_is_placed_afresh(db, two_engines, alice):
    engine_reports_record(reached=["a", "b"], unreachable={})
    removed = chat_session_create(alice, session_id="removed")  # after the retention
    Preview.objects.create(session=removed, state=PreviewState.STOPPED, engine="")
    taken_out = chat_session_create(alice, session_id="taken-out")  # engine no longer listed
    Preview.objects.create(session=taken_out, state=PreviewState.STOPPED, engine="gone")

    assert preview_engine(removed, placing=False) == ""
    assert preview_engine(removed, placing=True) == "b"
    assert preview_engine(taken_out, placing=True) == "b"
    assert Preview.objects.get(session=taken_out).engine == "b"


def test_the_status_of_a_preview_no_engine_holds_needs_no_worker(db, two_engines, alice):
    session = chat_session_create(alice, session_id="s")

    status = preview_ask(session=session, action=PreviewAction.STATUS)

    assert (status["state"], status["containers"]) == ("stopped", [])
