"""The sweep and stop tasks on a real Celery worker, Redis broker and Docker engine."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta as td

import pytest
from celery import signals
from django.utils import timezone

from cleanup.models import CleanupRun, StopDecision
from cleanup.tasks import sweep_task
from kosuke.health import engines_state
from previews.engine import engine
from previews.models import Preview, PreviewState
from tests.builders import chat_session_create, session_with_running_preview
from tests.engines import engines_configure
from tests.polling import finished_run, wait_for

Outcome = StopDecision.Outcome


def _on_engine(session, url: str) -> None:
    Preview.objects.filter(session=session).update(engine=url)


@pytest.fixture
def retries():
    """(retry number, countdown in seconds) of every stop retry the worker publishes."""
    published = []

    def record(sender: str, headers: dict, **_):
        if sender == "cleanup.stop_preview" and headers.get("retries"):
            # A retry drawn to wait 0 s carries no eta.
            eta = datetime.fromisoformat(headers["eta"]) if headers.get("eta") else timezone.now()
            published.append((headers["retries"], (eta - timezone.now()).total_seconds()))

    signals.before_task_publish.connect(record, weak=False)
    yield published
    signals.before_task_publish.disconnect(record)


def test_the_sweep_task_stops_idle_previews_through_stop_tasks(worker, alice):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(minutes=40))
    active = session_with_running_preview(alice, session_id="active", idle_for=td(minutes=1))

    summary = sweep_task.delay(trigger="beat").get(timeout=30)
    run = finished_run()

    assert summary["found"] == 1 and summary["trigger"] == "beat"
    assert (run.stopped, run.failed) == (1, 0)
    assert Preview.objects.get(session=idle).state == "stopped"
    assert Preview.objects.get(session=active).state == "running"


def test_a_dry_run_task_stops_nothing(worker, alice):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(minutes=40))

    summary = sweep_task.delay(trigger="command", dry_run=True).get(timeout=30)

    assert (summary["found"], summary["stopped"], summary["finished"]) == (1, 0, True)
    assert Preview.objects.get(session=idle).state == "running"


def test_a_stop_retries_with_exponential_backoff_until_the_engine_recovers(
    worker, alice, engine_proxy, retries
):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=1))
    _on_engine(session, "proxy")
    engine_proxy.fail(b"/stop", times=3)

    sweep_task.delay().get(timeout=30)
    run = finished_run()

    assert engine_proxy.failed == 3
    assert [number for number, _ in retries] == [1, 2, 3]
    countdowns = [countdown for _, countdown in retries]
    # Exponential from 1 s with Celery's full jitter: each wait within [0, 1 s · 2^n].
    for countdown, ceiling in zip(countdowns, (1, 2, 4), strict=True):
        assert -0.5 <= countdown <= ceiling + 0.5
    assert (run.stopped, run.failed) == (1, 0)
    assert Preview.objects.get(session=session).state == "stopped"


def test_one_failing_session_does_not_stop_the_others(worker, alice, engine_proxy):
    failing = session_with_running_preview(alice, session_id="failing", idle_for=td(hours=2))
    others = [
        session_with_running_preview(alice, session_id=f"ok{n}", idle_for=td(hours=1))
        for n in range(2)
    ]
    _on_engine(failing, "proxy")
    engine_proxy.fail(b"/stop", times=1000)

    sweep_task.delay().get(timeout=30)
    run = finished_run()

    assert (run.found, run.stopped, run.failed) == (3, 2, 1)
    assert [Preview.objects.get(session=s).state for s in others] == ["stopped", "stopped"]
    assert Preview.objects.get(session=failing).state == "running"  # never claimed stopped
    failed = StopDecision.objects.get(outcome=Outcome.FAILED)
    assert failed.session_id == "failing" and "could not stop" in failed.outcome_detail
    assert run.errors == [{"session": "proj-1/failing", "error": failed.outcome_detail}]
    assert engine_proxy.failed == 4  # the first try and 3 retries


def test_a_run_finishes_only_when_every_stop_has_settled(worker, alice, engine_proxy, tmp_path):
    idle = [
        session_with_running_preview(alice, session_id=f"idle{n}", idle_for=td(hours=1))
        for n in range(2)
    ]
    for session in idle:
        _on_engine(session, "proxy")
    lost = chat_session_create(alice, session_id="lost")
    Preview.objects.create(session=lost, state=PreviewState.RUNNING, engine="gone")
    engine_proxy.hold(b"/stop")

    sweep_task.delay().get(timeout=30)
    wait_for(lambda: engine_proxy.held == 2, timeout=30, what="both stops at the engine")
    run = CleanupRun.objects.get()
    assert (run.found, run.pending, run.undecided, run.is_finished) == (2, 2, 1, False)

    engine_proxy.let_through()
    wait_for(lambda: CleanupRun.objects.get().stopped == 1, timeout=30, what="one stop")
    run = CleanupRun.objects.get()
    # One stop settled, one pending, one preview undecided: not finished yet.
    assert (run.stopped, run.pending, run.is_finished) == (1, 1, False)

    engine_proxy.let_through()
    run = finished_run()
    assert (run.found, run.stopped, run.skipped, run.failed, run.pending) == (2, 2, 0, 0, 0)
    assert run.undecided == 1 and run.has_failures
    assert run.found == run.stopped + run.skipped + run.failed + run.pending


def test_a_worker_killed_while_restoring_lost_messages_blocks_restores_briefly():
    """Workers restore the messages of dead workers under a Redis lock; one killed while
    holding it leaves the lock to expire. The broker's channel takes our expiry (seconds),
    not kombu's default of 300 s that once held a stop past the fault suite's bound."""
    from kosuke.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert channel.unacked_mutex_expire == 10
        with channel.conn_or_acquire() as client:
            lock = client.lock(channel.unacked_mutex_key, timeout=channel.unacked_mutex_expire)
            assert lock.acquire(blocking=False)  # a worker that dies holding it
            assert 0 < client.pttl(channel.unacked_mutex_key) <= 10_000


def test_an_engine_whose_workers_are_all_down_waits_and_shows_as_down(
    worker, alice, settings, previews_on_docker
):
    # `far` is the real engine under another name, but no worker serves its queue.
    engines_configure(settings, far=engine().url)
    settings.DOCKER_TIMEOUT_SECONDS = 1
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    stranded = session_with_running_preview(alice, session_id="stranded", idle_for=td(hours=1))
    _on_engine(stranded, "far")

    sweep_task.delay().get(timeout=30)

    run = finished_run()
    assert (run.stopped, run.undecided) == (1, 1)
    assert Preview.objects.get(session=idle).state == PreviewState.STOPPED
    assert Preview.objects.get(session=stranded).state == PreviewState.RUNNING
    assert not StopDecision.objects.filter(session_id="stranded").exists()
    assert engines_state() == {
        "local": "up",
        "far": "down: no worker of engine far answered within 6 s "
        "(celery -A kosuke worker -Q engine.far)",
    }


def test_a_worker_of_one_thread_serving_both_queues_still_sweeps(
    transactional_db, previews_on_docker, alice
):
    # Its one thread runs the sweep: waiting on a list call of its own queue would never
    # end, so the engines it serves it calls itself.
    from celery.contrib.testing.worker import start_worker

    from kosuke.celery import app

    session = session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    with start_worker(
        app,
        pool="threads",
        concurrency=1,
        queues=["sweeps", "engine.local"],
        perform_ping_check=False,
        shutdown_timeout=60,
    ):
        sweep_task.delay().get(timeout=30)
        run = finished_run()

    assert (run.stopped, run.undecided, run.sweep_errors) == (1, 0, [])
    assert Preview.objects.get(session=session).state == PreviewState.STOPPED
