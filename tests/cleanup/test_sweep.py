"""The sweep as plain functions (no Celery): decisions, stops, runs, on the real engine."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.models import ChatSession
from chat.services import message_send
from cleanup.handout import QUEUED, handout_mark
from cleanup.lock import LOCK_KEY
from cleanup.models import CleanupRun, StopDecision
from cleanup.stops import decision_execute, stop_inline
from cleanup.sweep import sweep
from kosuke.redis_client import redis_client
from previews.models import Preview, PreviewState
from tests.builders import chat_session_create, session_address, session_with_running_preview

pytestmark = pytest.mark.django_db

Outcome = StopDecision.Outcome


class HandOut(list):
    """A dispatch that records each stop it is given and marks it queued, as the real one
    does after publishing it to the broker."""

    def __call__(self, decision: StopDecision, *, take_over: bool = False) -> None:
        self.append(decision)
        handout_mark(decision.pk, QUEUED)


def _state(session) -> str:
    return Preview.objects.get(session=session).state


def _running_containers(docker_client, session) -> int:
    label = f"kosuke.session_pk={session.pk}"
    return len(docker_client.containers.list(filters={"label": label}))


def test_it_stops_inactive_previews_and_leaves_active_ones(previews_on_docker, alice, caplog):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(minutes=45))
    busy = session_with_running_preview(alice, session_id="busy", idle_for=td(minutes=5))

    with caplog.at_level("INFO", logger="cleanup.stops"):
        run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)

    stops = [r.getMessage() for r in caplog.records if r.name == "cleanup.stops"]
    assert stops == ["stop proj-1/idle: stopped"]  # said once, not "stopped (stopped)"

    assert (_state(idle), _state(busy)) == ("stopped", "running")
    assert _running_containers(previews_on_docker, idle) == 0
    assert _running_containers(previews_on_docker, busy) == 1
    assert (run.examined, run.found, run.stopped, run.skipped, run.failed) == (2, 1, 1, 0, 0)
    assert run.finished_at is not None
    decision = StopDecision.objects.get()
    assert (decision.session_id, decision.stop_reason, decision.outcome) == (
        "idle",
        "inactive",
        "stopped",
    )
    assert decision.reason.startswith("stopped after 45 min without activity")
    preview = Preview.objects.get(session=idle)
    assert preview.last_stop_message().startswith("stopped after 45 min without activity")


def test_a_message_between_sweep_and_stop_keeps_the_preview(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(minutes=45))
    handed_out = HandOut()
    sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=handed_out)

    message_send(**session_address(session), content="wait, one more change")
    outcome = decision_execute(decision_id=handed_out[0].pk)

    assert outcome == Outcome.SKIPPED
    assert _state(session) == "running"
    decision = StopDecision.objects.get()
    assert decision.outcome_detail.startswith("not stopped after all: active")
    assert CleanupRun.objects.get().skipped == 1


def test_a_dry_run_decides_and_records_but_stops_nothing(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))

    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline, dry_run=True)

    assert _state(session) == "running"
    assert _running_containers(previews_on_docker, session) == 1
    assert (run.dry_run, run.found, run.stopped, run.skipped) == (True, 1, 0, 1)
    assert StopDecision.objects.get().outcome == Outcome.DRY_RUN


def test_the_batch_size_caps_the_stops_longest_idle_first(previews_on_docker, alice):
    sessions = [
        session_with_running_preview(alice, session_id=f"s{hours}", idle_for=td(hours=hours))
        for hours in (1, 3, 2)
    ]

    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline, batch_size=2)

    assert [_state(s) for s in sessions] == ["running", "stopped", "stopped"]
    assert (run.found, run.stopped, run.skipped) == (3, 2, 1)
    # Deferred stops are counted, not written: the decisions grow with stops, not sweeps.
    assert run.deferred == 1
    assert not StopDecision.objects.filter(session_id="s1").exists()


def test_an_engine_gets_more_stops_only_as_its_stops_in_flight_settle(
    previews_on_docker, alice, settings
):
    settings.CLEANUP_STOPS_IN_FLIGHT_PER_ENGINE = 2
    sessions = [
        session_with_running_preview(alice, session_id=f"s{hours}", idle_for=td(hours=hours))
        for hours in (1, 4, 3, 2)
    ]
    first = HandOut()
    run = sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=first)
    assert [d.session_id for d in first] == ["s4", "s3"]  # longest idle first
    assert run.deferred == 2

    second = HandOut()
    assert sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=second).deferred == 2
    assert second == []  # both still in flight on this engine: nothing more for it
    only_s2 = HandOut()  # a run for one session counts the stops in flight of the others
    sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=only_s2, session_pks={sessions[3].pk})
    assert only_s2 == []

    decision_execute(decision_id=first[0].pk)  # one settles
    third = HandOut()
    sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=third)
    assert [d.session_id for d in third] == ["s2"]
    assert [_state(s) for s in sessions] == ["running", "stopped", "running", "running"]


def test_a_threshold_given_for_the_run_overrides_the_setting(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(minutes=10))

    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline, threshold_minutes=5)

    assert run.threshold_minutes == 5
    assert _state(session) == "stopped"


def test_a_second_sweep_while_one_runs_does_nothing(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    held = redis_client().lock(LOCK_KEY, timeout=30)
    held.acquire()
    try:
        assert sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=stop_inline) is None
    finally:
        held.release()

    assert _state(session) == "running"
    assert not CleanupRun.objects.exists()


def test_it_lists_containers_once_per_engine(previews_on_docker, alice):
    for n in range(3):
        session_with_running_preview(alice, session_id=f"s{n}", idle_for=td(hours=2))

    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)

    assert run.engine_list_calls == 1
    assert run.stopped == 3


def test_its_queries_do_not_grow_with_the_history_of_stopped_sessions(previews_on_docker, alice):
    session_with_running_preview(alice, session_id="live", idle_for=td(minutes=1))

    def queries_of_one_sweep() -> int:
        with CaptureQueriesContext(connection) as queries:
            sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)
        return len(queries)

    few = queries_of_one_sweep()
    history = [ChatSession(owner=alice, project_id="old", session_id=f"h{n}") for n in range(500)]
    sessions = ChatSession.objects.bulk_create(history)
    Preview.objects.bulk_create(
        Preview(session=s, state=PreviewState.STOPPED, engine="unix:///gone") for s in sessions
    )

    assert queries_of_one_sweep() == few


def test_it_removes_containers_whose_session_is_gone(previews_on_docker, alice, settings):
    settings.ORPHAN_MIN_AGE_MINUTES = 0  # the minimum age: tests/cleanup/test_removals.py
    session = session_with_running_preview(alice, session_id="s", idle_for=td(minutes=1))
    label = f"kosuke.session_pk={session.pk}"
    session.delete()

    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)

    assert previews_on_docker.containers.list(all=True, filters={"label": label}) == []
    orphan = StopDecision.objects.get()
    assert (orphan.stop_reason, orphan.outcome, orphan.session_id) == ("orphan", "stopped", "s")
    assert run.stopped == 1


def test_a_stop_interrupted_by_a_dead_worker_is_finished_by_its_redelivery(
    previews_on_docker, alice
):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    handed_out = HandOut()
    sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=handed_out)
    decision = handed_out[0]
    # The first delivery claimed the preview, then its worker was killed.
    Preview.objects.filter(session=session).update(
        state=PreviewState.STOPPING, claim_token=f"decision:{decision.pk}:dead"
    )

    # The redelivery knows its worker died, so it takes the claim over.
    assert decision_execute(decision_id=decision.pk, take_over=True) == Outcome.STOPPED
    assert _state(session) == "stopped"
    assert decision_execute(decision_id=decision.pk) == Outcome.STOPPED  # and again: no-op
    assert CleanupRun.objects.get().stopped == 1


def test_an_unreachable_engine_is_recorded_and_the_rest_goes_on(
    previews_on_docker, alice, tmp_path
):
    healthy = session_with_running_preview(alice, session_id="ok", idle_for=td(hours=2))
    lost = chat_session_create(alice, session_id="lost")
    Preview.objects.create(
        session=lost, state=PreviewState.RUNNING, engine=f"unix://{tmp_path}/d.sock"
    )

    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)

    assert _state(healthy) == "stopped"
    assert _state(lost) == "running"
    # Its preview could not be decided: its own number, not a failed stop.
    assert (run.stopped, run.failed, run.undecided) == (1, 0, 1)
    assert run.errors[0]["engine"] == f"unix://{tmp_path}/d.sock"
    assert "unreachable" in run.errors[0]["error"]


def test_the_admin_shows_runs_and_decisions_read_only(previews_on_docker, alice, operator):
    client = operator
    session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)

    runs = client.get("/admin/cleanup/cleanuprun/", {"trigger": "command", "outcome": "clean"})
    decisions = client.get("/admin/cleanup/stopdecision/", {"outcome": "stopped"})
    detail = client.get(f"/admin/cleanup/cleanuprun/{run.pk}/change/")

    assert runs.status_code == decisions.status_code == detail.status_code == 200
    assert "stopped after 120 min without activity" in decisions.content.decode()
    assert "stopped after 120 min without activity" in detail.content.decode()
    assert client.get("/admin/cleanup/cleanuprun/add/").status_code == 403


def test_a_stop_already_handed_out_is_not_handed_out_again(previews_on_docker, alice):
    session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    handed_out = HandOut()

    sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=handed_out)
    second = sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=handed_out)

    assert len(handed_out) == 1
    assert second.found == 0


def test_a_stop_lost_long_ago_is_settled_as_failed_and_decided_again(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    # The message is lost, and with it the marker that says it was queued.
    sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=lambda decision, take_over=False: None)
    StopDecision.objects.update(decided_at=timezone.now() - td(hours=1))

    sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=stop_inline)

    first, second = StopDecision.objects.order_by("pk")
    assert (first.outcome, first.outcome_detail) == ("failed", "lost: never carried out")
    assert second.outcome == "stopped"
    assert _state(session) == "stopped"


def test_a_stop_costs_five_statements_and_no_second_listing(
    previews_on_docker, alice, engine_proxy
):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    Preview.objects.filter(session=session).update(engine="proxy")
    handed_out = HandOut()
    sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=handed_out)
    engine_proxy.requests.clear()

    with CaptureQueriesContext(connection) as queries:
        outcome = decision_execute(decision_id=handed_out[0].pk)

    assert outcome == Outcome.STOPPED
    # Read, mark begun (what a cancel races), claim, mark stopped, settle; the sweep's
    # listing named the container to stop.
    assert len(queries) == 5, [query["sql"] for query in queries]
    assert [request.split("/")[-1] for request in engine_proxy.requests] == ["stop?t=2"]
    assert _running_containers(previews_on_docker, session) == 0
