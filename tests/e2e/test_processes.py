"""End to end: `celery -A kosuke worker` and `celery -A kosuke beat` as real processes.

The processes share the test database, Redis and the Docker engine with this test; the
tests arrange rows, let the schedule run, and watch the database and the engine.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta as td

from django.conf import settings

from chat.models import ChatSession
from cleanup.models import StopDecision
from cleanup.tasks import sweep_task
from previews.engine import engine
from previews.models import Preview, PreviewState
from tests.builders import session_with_running_preview
from tests.polling import wait_for
from tests.preview_image import IGNORE_SIGTERM, preview_image_build
from tests.procfile import procfile_command


def _state(session: ChatSession) -> str:
    return Preview.objects.get(session=session).state


def _stop_settled() -> StopDecision | None:
    """The one stop decision, once its task recorded the outcome (after the preview row)."""
    return StopDecision.objects.exclude(outcome=StopDecision.Outcome.PENDING).first()


def test_beat_stops_an_idle_preview_with_no_manual_trigger(processes, alice):
    threshold = td(minutes=settings.CLEANUP_THRESHOLD_MINUTES)
    # Goes idle past the threshold 3 seconds from now.
    session = session_with_running_preview(
        alice, session_id="s", idle_for=threshold - td(seconds=3)
    )
    crossed_at = session.last_activity_at + threshold
    processes.worker("worker")
    processes.beat("beat")

    wait_for(_stop_settled, timeout=90, what="the schedule to stop it")

    stopped_at = Preview.objects.get(session=session).stopped_at
    print(
        f"threshold crossed -> preview stopped: {(stopped_at - crossed_at).total_seconds():.1f} s"
    )
    containers = engine().containers({"kosuke.session_pk": str(session.pk)})
    assert [c.state for c in containers] == ["exited"]
    assert StopDecision.objects.get().outcome == "stopped"
    # Every structured line names the process it comes from, the first ones included.
    for name in ("worker", "beat"):
        lines = (processes.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        logged = [line for line in lines if line.startswith("ts=")]
        assert logged and all(f" component={name} " in line for line in logged), name


def test_while_paused_beat_stops_nothing_and_after_resume_it_does(processes, alice):
    from cleanup.control import Actor, cleanup_pause, cleanup_resume
    from cleanup.models import CleanupRun

    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=1))
    cleanup_pause(Actor(name="ops"), reason="deploy")
    processes.worker("worker")
    processes.beat("beat")

    paused = wait_for(
        lambda: CleanupRun.objects.filter(trigger="beat", paused=True).count() >= 2,
        timeout=60,
        what="two scheduled sweeps while paused",
    )
    assert paused and _state(session) == "running" and not StopDecision.objects.exists()
    assert CleanupRun.objects.filter(trigger="beat", paused=True).first().note == (
        "paused by ops: deploy; nothing stopped"
    )

    cleanup_resume(Actor(name="ops"))

    wait_for(_stop_settled, timeout=60, what="the schedule to stop it once resumed")
    assert _state(session) == "stopped"


def test_the_product_cards_plain_commands_stop_an_idle_preview(processes, alice, tmp_path):
    """`celery -A kosuke worker` and `celery -A kosuke beat`, nothing more: the worker
    serves every queue the system uses (beat's schedule file goes to the working dir)."""
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=1))
    processes.start("worker", "worker", cwd=tmp_path)
    processes.start("beat", "beat", cwd=tmp_path)

    wait_for(_stop_settled, timeout=90, what="the plain worker and beat to stop it")

    assert _state(session) == "stopped"
    assert StopDecision.objects.get().outcome == "stopped"


def test_two_beats_at_once_still_stop_each_preview_once(processes, alice):
    sessions = [
        session_with_running_preview(alice, session_id=f"s{n}", idle_for=td(hours=1))
        for n in range(3)
    ]
    processes.worker("worker")
    processes.beat("beat-1")
    processes.beat("beat-2")

    wait_for(
        lambda: all(_state(s) == "stopped" for s in sessions),
        timeout=90,
        what="every preview to stop",
    )
    time.sleep(5)  # a few more sweeps from both beats: nothing more may happen

    decisions = StopDecision.objects.order_by("session_id")
    assert [(d.session_id, d.outcome) for d in decisions] == [
        ("s0", "stopped"),
        ("s1", "stopped"),
        ("s2", "stopped"),
    ]
    assert StopDecision.objects.values("run").distinct().count() >= 1


def test_a_worker_killed_mid_stop_loses_nothing(processes, alice, previews_on_docker, settings):
    settings.PREVIEW_IMAGE = preview_image_build(
        previews_on_docker, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    processes.env["PREVIEW_IMAGE"] = settings.PREVIEW_IMAGE
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=1))
    first = processes.worker("worker-1")
    sweep_task.delay()

    wait_for(
        lambda: _state(session) == PreviewState.STOPPING,
        timeout=60,
        what="the first worker to begin the stop",
    )
    processes.kill(first)  # SIGKILL, mid-stop: no chance to clean up or acknowledge
    assert _state(session) == PreviewState.STOPPING
    processes.worker("worker-2")

    decision = wait_for(_stop_settled, timeout=90, what="the stop to complete")
    assert decision.outcome == "stopped"
    assert _state(session) == "stopped"
    containers = engine().containers({"kosuke.session_pk": str(session.pk)})
    assert [c.state for c in containers] == ["exited"]


def _procfile_celery_args(name: str, **variables: str) -> list[str]:
    """The arguments after `celery -A kosuke` of the Procfile's process `name`."""
    return procfile_command(name, **variables).split()[3:]


def test_the_engine_worker_stops_many_previews_at_once_on_few_connections(
    processes, alice, previews_on_docker, settings
):
    """The Procfile's `engine` process (engine `local`'s worker: threads) and `worker`
    (the sweeps, which reach the engine only through engine.local's queue)."""
    settings.PREVIEW_IMAGE = preview_image_build(
        previews_on_docker, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    processes.env |= {"PREVIEW_IMAGE": settings.PREVIEW_IMAGE, "DATABASE_POOL_MAX_SIZE": "2"}
    sessions = [
        session_with_running_preview(alice, session_id=f"s{n}", idle_for=td(hours=1))
        for n in range(6)
    ]
    processes.start(
        "engine",
        *_procfile_celery_args("engine", KOSUKE_ENGINE="local", ENGINE_CONCURRENCY="8"),
    )
    processes.start("worker", *_procfile_celery_args("worker"))  # the sweeps
    sweep_task.delay()

    # Each stop waits its whole stop timeout (6 s): all six are under way at once, on
    # threads sharing two pooled connections, not one after another.
    wait_for(
        lambda: Preview.objects.filter(state=PreviewState.STOPPING).count() == len(sessions),
        timeout=60,
        what="every stop under way at once",
        every=0.1,
    )
    wait_for(
        lambda: StopDecision.objects.filter(outcome="stopped").count() == len(sessions),
        timeout=60,
        what="every stop done",
    )
    assert {_state(session) for session in sessions} == {"stopped"}

    def stops_logged() -> int:
        log = (processes.log_dir / "engine.log").read_text()
        return len(re.findall(r"queue=engine\.local session=\S+ msg=\"stop \S+: stopped", log))

    wait_for(lambda: stops_logged() == len(sessions), timeout=10, what="the stops logged")
    engine_log = (processes.log_dir / "engine.log").read_text()
    assert "concurrency: 8 (thread)" in engine_log
    assert "engine-local@" in engine_log  # the name the Procfile gives it
    # The sweeps worker stopped nothing itself: every stop ran on the engine's worker.
    worker_log = (processes.log_dir / "worker.log").read_text()
    assert not re.search(r"msg=\"stop \S+: stopped", worker_log)
