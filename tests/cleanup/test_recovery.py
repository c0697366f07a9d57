"""Recovering from faults without waiting for cutoffs: stops lost with the broker, tasks
that gave up, claims left behind, sweeps that died, containers started behind our back."""

from __future__ import annotations

import threading
import time
from datetime import timedelta as td

import pytest
from django.db import connection
from django.utils import timezone

from cleanup.handout import ENDED, QUEUED, TAKE_OVER_AFTER, handout_mark, handout_states
from cleanup.lock import LOCK_KEY
from cleanup.models import CleanupRun, StopDecision
from cleanup.stops import UNDER_WAY, decision_execute
from cleanup.sweep import DIED, SWEEP_TIME_LIMIT, sweep
from cleanup.tasks import stop_enqueue
from kosuke.redis_client import redis_client
from previews.lifecycle import RESTARTED
from previews.models import Preview, PreviewState
from previews.reconcile import OUTSIDE
from tests.builders import session_address, session_with_running_preview
from tests.polling import wait_for

pytestmark = pytest.mark.django_db
Outcome = StopDecision.Outcome


class HandOut(list):
    """A dispatch that records (decision, take_over) and marks it queued, as the real one."""

    def __call__(self, decision: StopDecision, *, take_over: bool = False) -> None:
        self.append((decision.pk, take_over))
        handout_mark(decision.pk, QUEUED)


def _sweep(dispatch) -> CleanupRun:
    return sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=dispatch)


def test_a_stop_whose_message_the_broker_lost_is_handed_out_again(previews_on_docker, alice):
    session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    first = HandOut()
    _sweep(first)
    [(decision_id, _)] = first
    redis_client().flushdb()  # Redis restarted without persistence: message and marker gone

    again = HandOut()
    _sweep(again)

    assert again == [(decision_id, False)]
    assert StopDecision.objects.count() == 1  # the same decision, not a new one
    assert handout_states([decision_id]) == {decision_id: QUEUED}


def test_a_stop_handed_out_is_marked_queued_unless_its_task_gave_up_first(
    previews_on_docker, alice
):
    session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    decided = []
    _sweep(lambda decision, take_over=False: decided.append(decision))
    [decision] = decided

    handout_mark(decision.pk, ENDED)  # its task gave up before the sweep came to mark it
    stop_enqueue(decision)
    assert handout_states([decision.pk]) == {decision.pk: ENDED}

    stop_enqueue(decision, take_over=True)  # the next sweep hands it out again
    assert handout_states([decision.pk]) == {decision.pk: QUEUED}
    assert redis_client().llen("engine.local") == 2  # both messages reached the broker


def test_a_stop_still_queued_is_not_handed_out_again(previews_on_docker, alice):
    session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    _sweep(HandOut())

    again = HandOut()
    _sweep(again)

    assert again == []


def _claimed_stop(owner, *, claimed_ago: td = td(0)) -> tuple:
    """An idle session whose stop was handed out and claimed `claimed_ago` by an attempt
    that is no longer here to say so; returns (session, decision id)."""
    session = session_with_running_preview(owner, session_id="s", idle_for=td(hours=2))
    first = HandOut()
    _sweep(first)
    [(decision_id, _)] = first
    Preview.objects.filter(session=session).update(
        state=PreviewState.STOPPING,
        claim_token=f"decision:{decision_id}:first",
        state_changed_at=timezone.now() - claimed_ago,
    )
    return session, decision_id


def test_a_stop_whose_task_gave_up_unrecorded_is_handed_out_to_take_over(previews_on_docker, alice):
    # Its task claimed the preview, then the database went away until it gave up.
    session, decision_id = _claimed_stop(alice)
    handout_mark(decision_id, ENDED)

    again = HandOut()
    _sweep(again)
    assert again == [(decision_id, True)]

    assert decision_execute(decision_id=decision_id, take_over=True) == Outcome.STOPPED
    decision = StopDecision.objects.get()
    assert (decision.outcome, decision.stop_reason) == ("stopped", "inactive")
    preview = Preview.objects.get(session=session)
    assert (preview.state, preview.last_stop_reason) == ("stopped", "inactive")


def test_a_second_copy_of_a_running_stop_leaves_it_alone(previews_on_docker, alice):
    # The first copy claimed it a moment ago and is stopping it now.
    session, decision_id = _claimed_stop(alice)

    assert decision_execute(decision_id=decision_id) == UNDER_WAY
    assert StopDecision.objects.get().outcome == Outcome.PENDING  # the first copy settles it
    assert Preview.objects.get(session=session).state == PreviewState.STOPPING
    redis_client().flushdb()
    assert _sweep(HandOut()).found == 0  # nor is it handed out while its claim is fresh


def test_a_claim_older_than_a_stop_can_take_is_taken_over(previews_on_docker, alice):
    session, decision_id = _claimed_stop(alice, claimed_ago=TAKE_OVER_AFTER + td(seconds=1))

    assert decision_execute(decision_id=decision_id) == Outcome.STOPPED
    assert Preview.objects.get(session=session).state == PreviewState.STOPPED


def test_a_run_left_unswept_by_a_dead_sweep_is_closed_with_a_reason(db):
    long_ago = timezone.now() - td(seconds=SWEEP_TIME_LIMIT + 1)
    dead = CleanupRun.objects.create(
        trigger="beat", threshold_minutes=30, batch_size=100, started_at=long_ago
    )
    # One started a moment ago may be a sweep still at work (its lock expired): left alone.
    recent = CleanupRun.objects.create(trigger="beat", threshold_minutes=30, batch_size=100)

    _sweep(HandOut())

    dead.refresh_from_db()
    assert dead.is_finished and dead.has_failures
    assert dead.errors == [{"error": DIED}]
    recent.refresh_from_db()
    assert recent.swept_at is None


@pytest.mark.django_db(transaction=True)
def test_the_sweep_lock_lives_one_interval_and_is_renewed_while_the_sweep_runs(
    previews_on_docker, alice, settings
):
    settings.CLEANUP_INTERVAL_SECONDS = 6
    session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    handing_out, release = threading.Event(), threading.Event()

    def slow_dispatch(decision, *, take_over=False):
        handing_out.set()
        release.wait(30)

    def sweep_in_thread():
        try:
            _sweep(slow_dispatch)
        finally:
            connection.close()

    sweeping = threading.Thread(target=sweep_in_thread)
    sweeping.start()
    try:
        assert handing_out.wait(30)
        assert 0 < redis_client().pttl(LOCK_KEY) <= 6000  # free 6 s after a holder dies
        time.sleep(7)  # longer than its time to live: only the renewal keeps it
        assert redis_client().exists(LOCK_KEY)
        assert _sweep(HandOut()) is None  # a second sweep meanwhile does nothing
    finally:
        release.set()
        sweeping.join(30)
    assert not redis_client().exists(LOCK_KEY)


def test_a_container_started_behind_our_back_is_adopted_then_stopped_when_idle(
    previews_on_docker, alice, settings
):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    from previews.models import StopReason
    from previews.services import preview_stop

    preview_stop(session=session, reason=StopReason.MANUAL)
    labels = [f"kosuke.session_pk={session.pk}", f"kosuke.managed_by={settings.PREVIEW_MANAGED_BY}"]
    [container] = previews_on_docker.containers.list(all=True, filters={"label": labels})
    container.start()  # docker start, outside the system

    handed_out = HandOut()
    run = _sweep(handed_out)

    preview = Preview.objects.get(session=session)
    assert (preview.state, preview.start_detail) == ("running", OUTSIDE)
    assert run.found == 1 and len(handed_out) == 1  # idle for 2 h: its stop is handed out
    assert decision_execute(decision_id=handed_out[0][0]) == Outcome.STOPPED
    container.reload()
    assert container.status == "exited"


def test_a_decision_without_its_containers_lists_them_before_stopping(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    handed_out = HandOut()
    _sweep(handed_out)
    # Recorded before decisions carried their containers (a pending one at an upgrade).
    StopDecision.objects.update(containers=[])

    assert decision_execute(decision_id=handed_out[0][0]) == Outcome.STOPPED
    label = f"kosuke.session_pk={session.pk}"
    assert previews_on_docker.containers.list(filters={"label": label}) == []


@pytest.mark.django_db(transaction=True)
def test_a_message_during_the_stop_gets_the_preview_started_again(
    previews_on_docker, alice, settings
):
    from chat.services import message_send
    from tests.preview_image import IGNORE_SIGTERM, preview_image_build

    # A dev server that ignores SIGTERM: its stop takes the whole stop timeout (2 s).
    settings.PREVIEW_IMAGE = preview_image_build(
        previews_on_docker, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    handed_out = HandOut()
    _sweep(handed_out)
    outcome = []

    def stop():
        try:
            outcome.append(decision_execute(decision_id=handed_out[0][0]))
        finally:
            connection.close()

    stopping = threading.Thread(target=stop)
    stopping.start()
    wait_for(
        lambda: Preview.objects.get(session=session).state == PreviewState.STOPPING,
        timeout=10,
        what="the stop to begin",
    )
    message_send(**session_address(session), content="one more change, please")
    stopping.join(30)

    assert outcome == [Outcome.SKIPPED]
    decision = StopDecision.objects.get()
    assert decision.outcome_detail == RESTARTED
    preview = Preview.objects.get(session=session)
    assert (preview.state, preview.start_detail) == ("running", RESTARTED)
    label = f"kosuke.session_pk={session.pk}"
    [container] = previews_on_docker.containers.list(filters={"label": label})
    assert container.status == "running"


def test_of_two_copies_taking_over_an_abandoned_claim_only_one_does(previews_on_docker, alice):
    from previews.lifecycle import preview_take_over

    session, decision_id = _claimed_stop(alice, claimed_ago=TAKE_OVER_AFTER + td(seconds=1))
    as_read = [Preview.objects.get(session=session) for _ in range(2)]

    won = [
        preview_take_over(p, token=f"decision:{decision_id}:{n}", now=timezone.now())
        for n, p in enumerate(as_read)
    ]

    assert won == [True, False]
    assert Preview.objects.get(session=session).claim_token == f"decision:{decision_id}:0"
