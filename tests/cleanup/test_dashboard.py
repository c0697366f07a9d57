"""The operations dashboard's pages and controls (/ops/): staff only, what each page
shows, and controls that ask why, record who, and refuse bad input changing nothing."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.test import Client
from django.utils import timezone

from cleanup.control import pause_state
from cleanup.models import CleanupRun, OperatorAction, StopDecision
from tests.builders import stop_decisions_create, user_create

Outcome = StopDecision.Outcome


@pytest.fixture
def ops(db) -> Client:
    client = Client()
    client.force_login(user_create("operator", is_staff=True))
    return client


def _run(*, decisions: list[str] = (), swept: bool = True, **fields) -> CleanupRun:
    run = CleanupRun.objects.create(
        trigger=fields.pop("trigger", "beat"),
        threshold_minutes=30,
        batch_size=100,
        swept_at=timezone.now() if swept else None,
        examined=fields.pop("examined", 3),
        **fields,
    )
    stop_decisions_create(run, decisions)
    return run


def test_anonymous_visitors_log_in_first_and_other_users_are_refused(db):
    response = Client().get("/ops/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/ops/"

    member = Client()
    member.force_login(user_create("member"))
    for path in ("/ops/", "/ops/runs/"):
        response = member.get(path)
        assert response.status_code == 403
        assert b"Operators only" in response.content
    assert member.post("/ops/pause", {"reason": "x"}).status_code == 403
    assert pause_state() is None


def test_the_overview_shows_previews_engines_stops_charts_and_the_live_run(ops):
    _run(decisions=[Outcome.STOPPED, Outcome.FAILED, Outcome.PENDING])
    _run(examined=7)  # found nothing: not the live run

    page = ops.get("/ops/").content.decode()

    assert "Cleanup is <span" in page and ">running</span>" in page
    assert "Previews now" in page and "Running, by activity" in page and "Engines" in page
    # Stops by reason, in the last 24 h and 7 days.
    assert "<td>inactive</td><td>pending 1, stopped 1, failed 1</td>" in page
    assert "Failure rate: 50.0% (24 h), 50.0% (7 d)" in page
    assert 'id="series-day"' in page and '"live_previews"' in page
    assert "uplot-1.6.32/uPlot.iife.min.js" in page
    assert "stopped after 42 min without activity" in page and 'data-outcome="pending"' in page
    assert 'data-since="' in page and 'data-events="/ops/events"' in page


def test_the_run_list_hides_empty_runs_unless_asked_and_filters(ops):
    busy = _run(decisions=[Outcome.FAILED], trigger="api")
    empty = _run(examined=5)
    dry = _run(decisions=[Outcome.DRY_RUN], dry_run=True)

    def listed(query: str = "") -> set[int]:
        response = ops.get(f"/ops/runs/{query}")
        assert response.status_code == 200
        return {run.pk for run in response.context["page"]}

    assert listed() == {busy.pk, dry.pk}
    assert listed("?empty=1") == {busy.pk, empty.pk, dry.pk}
    assert listed("?trigger=api") == {busy.pk}
    assert listed("?outcome=failed") == {busy.pk}
    assert listed("?dry_run=yes") == {dry.pk}
    page = ops.get("/ops/runs/").content.decode()
    assert f"{busy.started_at:%Y-%m-%d %H:%M:%S}" in page  # to the second


def test_a_run_page_lists_every_decision_and_who_acted(ops):
    run = _run(decisions=[Outcome.STOPPED, Outcome.PENDING])
    ops.post(f"/ops/runs/{run.pk}/cancel", {"reason": "wrong threshold"})

    page = ops.get(f"/ops/runs/{run.pk}/").content.decode()

    assert page.count('<td class="session">proj/') == 2
    assert "cancelled by operator: wrong threshold" in page
    assert "operator</td><td>cancel</td><td>wrong threshold" in page
    assert ops.get("/ops/runs/999999/").status_code == 404


def test_pause_and_resume_ask_why_and_record_who(ops):
    response = ops.post("/ops/pause", {"reason": "", "minutes": "10"})
    assert response.status_code == 400
    assert b"reason: This field is required." in response.content
    assert pause_state() is None

    response = ops.post("/ops/pause", {"reason": "engine upgrade", "minutes": "10"})
    assert response.status_code == 302 and response["Location"] == "/ops/"
    pause = pause_state()
    assert (pause.by, pause.reason) == ("operator", "engine upgrade")
    assert td(minutes=9) < pause.until - timezone.now() <= td(minutes=10)
    page = ops.get("/ops/").content.decode()
    assert ">paused</span>" in page and "Paused by operator" in page

    assert ops.post("/ops/resume", {"reason": "done"}).status_code == 302
    assert pause_state() is None
    kinds = list(OperatorAction.objects.order_by("pk").values_list("kind", "reason"))
    assert kinds == [("pause", "engine upgrade"), ("resume", "done")]


def test_a_sweep_from_the_page_needs_a_reason_unless_a_dry_run(ops):
    response = ops.post("/ops/runs/start", {"threshold_minutes": "5"})
    assert response.status_code == 400
    assert b"Say why" in response.content
    assert ops.post("/ops/runs/start", {"batch_size": "0", "dry_run": "on"}).status_code == 400
    assert not CleanupRun.objects.exists()

    response = ops.post("/ops/runs/start", {"dry_run": "on", "threshold_minutes": "5"})
    run = CleanupRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/ops/runs/{run.pk}/"
    assert (run.trigger, run.dry_run, run.threshold_minutes) == ("api", True, 5)
    action = OperatorAction.objects.get()
    assert (action.kind, action.actor_name, action.run_id) == ("trigger", "operator", run.pk)


def test_cancel_and_retry_refuse_what_does_not_apply_with_a_page_saying_why(ops):
    finished = _run(decisions=[Outcome.STOPPED])

    response = ops.post(f"/ops/runs/{finished.pk}/cancel", {"reason": "oops"})
    assert response.status_code == 409
    assert b"has finished; there is nothing to cancel" in response.content
    response = ops.post(f"/ops/runs/{finished.pk}/retry", {"reason": "again"})
    assert response.status_code == 409
    assert b"has no failed stops to retry" in response.content
    assert not OperatorAction.objects.exists()
    assert ops.get(f"/ops/runs/{finished.pk}/cancel").status_code == 405


def test_controls_need_the_csrf_token(db):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_create("operator", is_staff=True))
    assert client.post("/ops/pause", {"reason": "x"}).status_code == 403
    assert pause_state() is None


def test_the_admin_links_to_the_dashboard(ops):
    assert b'href="/ops/">Operations dashboard</a>' in ops.get("/admin/").content


def test_one_sessions_preview_control_names_what_is_wrong(ops):
    response = ops.post("/ops/preview", {"session": "nope", "action": "stop", "reason": "r"})
    assert response.status_code == 400
    assert b"expected PROJECT/SESSION" in response.content
    response = ops.post("/ops/preview", {"session": "p/s", "action": "stop", "reason": "r"})
    assert response.status_code == 404 and b"no chat session p/s" in response.content


def test_the_admins_run_list_shows_seconds_and_hides_empty_runs_on_request(ops, db):
    from django.contrib.auth.models import User

    User.objects.filter(username="operator").update(is_superuser=True)
    busy = _run(decisions=[Outcome.STOPPED])
    empty = _run(examined=4)

    page = ops.get("/admin/cleanup/cleanuprun/?found=something").content.decode()

    assert f"{busy.started_at:%Y-%m-%d %H:%M:%S}" in page
    assert f'href="/admin/cleanup/cleanuprun/{busy.pk}/change/' in page
    assert f'href="/admin/cleanup/cleanuprun/{empty.pk}/change/' not in page
