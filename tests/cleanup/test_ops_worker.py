"""Operators steer real runs: a real Celery worker, Redis broker and Docker engine."""

from __future__ import annotations

from datetime import timedelta as td

import pytest

from cleanup.models import CleanupRun, OperatorAction, StopDecision
from cleanup.tasks import sweep_task
from previews.models import Preview, PreviewState
from tests.builders import api_client, session_with_running_preview, user_create
from tests.polling import wait_for

Outcome = StopDecision.Outcome


@pytest.fixture
def staff_api(transactional_db):
    return api_client(user_create("operator", is_staff=True))


def _post(client, path: str, body: dict):
    return client.post(path, body, content_type="application/json")


def test_a_triggered_run_answers_with_its_summary_once_finished(worker, alice, staff_api):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    session_with_running_preview(alice, session_id="active", idle_for=td(seconds=5))

    response = _post(
        staff_api, "/api/ops/cleanup-runs", {"wait": True, "timeout_seconds": 30, "reason": "now"}
    )

    assert response.status_code == 200, response.content
    run = response.json()
    assert (run["trigger"], run["finished"]) == ("api", True)
    assert (run["examined"], run["found"], run["stopped"], run["failed"]) == (2, 1, 1, 0)
    [decision] = run["decisions"]
    assert decision["session_id"] == "idle" and decision["outcome"] == "stopped"
    assert "without activity" in decision["reason"]
    assert decision["due_at"] < decision["decided_at"] <= decision["settled_at"]
    [action] = run["actions"]
    assert (action["kind"], action["actor"], action["reason"]) == ("trigger", "operator", "now")
    assert Preview.objects.get(session=idle).state == PreviewState.STOPPED


def test_cancel_leaves_the_stops_that_have_not_begun_and_lets_the_others_finish(
    worker, alice, staff_api, previews_on_docker, settings
):
    from tests.preview_image import IGNORE_SIGTERM, preview_image_build

    # Dev servers that ignore SIGTERM: each stop takes the whole stop timeout. Four
    # worker threads: four stops begin, the other two wait in the queue.
    settings.PREVIEW_STOP_TIMEOUT_SECONDS = 4
    settings.PREVIEW_IMAGE = preview_image_build(
        previews_on_docker, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    sessions = [
        session_with_running_preview(alice, session_id=f"s{n}", idle_for=td(hours=1, minutes=n))
        for n in range(6)
    ]
    run = CleanupRun.objects.get(pk=_post(staff_api, "/api/ops/cleanup-runs", {}).json()["id"])
    wait_for(
        lambda: run.decisions.filter(began_at__isnull=False).count() == 4,
        timeout=30,
        what="four stops to begin",
    )

    response = _post(
        staff_api, f"/api/ops/cleanup-runs/{run.pk}/cancel", {"reason": "wrong threshold"}
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"run": run.pk, "cancelled": 2, "under_way": 4}
    run = wait_for(
        lambda: CleanupRun.objects.finished().filter(pk=run.pk).first(),
        timeout=60,
        what="the run to finish",
    )
    assert (run.stopped, run.cancelled, run.failed) == (4, 2, 0)
    cancelled = run.decisions.filter(outcome=Outcome.CANCELLED)
    assert {d.outcome_detail for d in cancelled} == {"cancelled by operator: wrong threshold"}
    for decision in cancelled:
        assert decision.began_at is None
        assert Preview.objects.get(session=decision.chat_session).state == PreviewState.RUNNING
    stopped = [Preview.objects.get(session=s).state for s in sessions].count("stopped")
    assert stopped == 4
    # A stop settles when the engine confirmed it, not when it began: the stop timeout later.
    for decision in run.decisions.filter(outcome=Outcome.STOPPED):
        assert decision.settled_at - decision.began_at >= td(seconds=3.5)
        preview = Preview.objects.get(session=decision.chat_session)
        assert preview.stopped_at - decision.began_at >= td(seconds=3.5)
    action = OperatorAction.objects.get(kind="cancel")
    assert (action.run, action.details) == (run, {"cancelled": 2, "under_way": 4})


def test_retry_stops_what_failed_once_the_engine_is_back(worker, alice, staff_api, engine_proxy):
    failing = session_with_running_preview(alice, session_id="failing", idle_for=td(hours=1))
    Preview.objects.filter(session=failing).update(engine="proxy")
    engine_proxy.fail(b"/stop", times=4)  # the first try and its three retries

    sweep_task.delay().get(timeout=30)
    failed_run = wait_for(
        lambda: CleanupRun.objects.finished().filter(trigger="beat").first(),
        timeout=60,
        what="the run to fail",
    )
    assert failed_run.failed == 1

    response = _post(staff_api, f"/api/ops/cleanup-runs/{failed_run.pk}/retry", {})

    assert response.status_code == 202, response.content
    retry = wait_for(
        lambda: CleanupRun.objects.finished().filter(retry_of=failed_run).first(),
        timeout=30,
        what="the retry to finish",
    )
    assert (retry.trigger, retry.stopped, retry.failed) == ("api", 1, 0)
    assert Preview.objects.get(session=failing).state == PreviewState.STOPPED
    detail = api_client(user_create("another-op", is_staff=True)).get(
        f"/api/ops/cleanup-runs/{failed_run.pk}"
    )
    assert detail.json()["retries"] == [retry.pk]


def test_while_paused_a_scheduled_sweep_stops_nothing_and_after_resume_it_does(
    worker, alice, staff_api
):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    _post(staff_api, "/api/ops/cleanup/pause", {"reason": "incident 42"})

    paused = sweep_task.delay().get(timeout=30)  # what beat sends

    assert paused["paused"] and paused["note"] == "paused by operator: incident 42; nothing stopped"
    assert Preview.objects.get(session=idle).state == PreviewState.RUNNING

    _post(staff_api, "/api/ops/cleanup/resume", {})
    resumed = sweep_task.delay().get(timeout=30)

    assert not resumed["paused"] and resumed["found"] == 1
    wait_for(
        lambda: Preview.objects.get(session=idle).state == PreviewState.STOPPED,
        timeout=30,
        what="the idle preview to stop",
    )
