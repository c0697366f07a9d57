"""`stops_at`, as the heartbeat answers it, agrees with what the sweep then does: a sweep
a second before it keeps the preview, a sweep a second after it stops the preview for the
reason announced. Real PostgreSQL, Redis and Docker; the sweep's clock is moved by `now`."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta as td

import pytest
from django.utils import timezone

from chat.models import ChatSession
from cleanup.models import CleanupRun, StopDecision
from cleanup.stops import stop_inline
from cleanup.sweep import sweep
from previews.models import Preview
from tests.builders import session_with_running_preview

pytestmark = pytest.mark.django_db

HEARTBEAT = "/api/projects/proj-1/chat-sessions/s/heartbeat"


def _stop_announced(api) -> tuple[datetime, str, str]:
    """What the preview panel is told: when, why in words, and the reason's code."""
    body = api.post(HEARTBEAT, {"client_id": "tab"}, content_type="application/json").json()
    return datetime.fromisoformat(body["stops_at"]), body["stops_because"], body["stops_reason"]


def _sweep_at(now: datetime) -> CleanupRun:
    return sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline, now=now)


def _assert_kept_then_stopped(session: ChatSession, stops_at: datetime, because: str, code: str):
    before = _sweep_at(stops_at - td(seconds=1))

    assert before.found == 0
    assert Preview.objects.get(session=session).state == "running"

    after = _sweep_at(stops_at + td(seconds=1))

    decision = StopDecision.objects.get(chat_session=session)
    assert (decision.run_id, decision.stop_reason, decision.reason) == (
        after.pk,
        code,
        f"stopped {because}",
    )
    assert decision.outcome == StopDecision.Outcome.STOPPED
    assert Preview.objects.get(session=session).state == "stopped"


def test_an_idle_preview_stops_at_the_first_sweep_after_stops_at(
    previews_on_docker, alice, alice_api, settings
):
    settings.CLEANUP_THRESHOLD_MINUTES = 30
    session = session_with_running_preview(alice, session_id="s", idle_for=td(minutes=45))

    stops_at, because, code = _stop_announced(alice_api)

    assert (because, code) == ("after 30 min without activity (threshold 30 min)", "inactive")
    _assert_kept_then_stopped(session, stops_at, because, code)


def test_a_keep_alive_holds_the_stop_until_it_ends(previews_on_docker, alice, alice_api):
    busy_until = timezone.now() - td(minutes=5)
    session = session_with_running_preview(
        alice, session_id="s", idle_for=td(minutes=45), busy_until=busy_until
    )

    stops_at, because, code = _stop_announced(alice_api)

    assert abs(stops_at - busy_until) < td(milliseconds=1)
    # The panel is told that the keep-alive holds the stop; the decision says why it stops.
    held = f"when its keep-alive ends at {busy_until:%Y-%m-%d %H:%M} UTC, "
    assert because.startswith(held)
    _assert_kept_then_stopped(session, stops_at, because.removeprefix(held), code)
    # Late from the keep-alive's end, not from the threshold it held back.
    assert StopDecision.objects.get(chat_session=session).due_at == busy_until


def test_the_maximum_age_stops_an_active_preview(previews_on_docker, alice, alice_api, settings):
    settings.PREVIEW_MAX_AGE_MINUTES = 60
    session = session_with_running_preview(alice, session_id="s", idle_for=td(0))
    Preview.objects.filter(session=session).update(started_at=timezone.now() - td(minutes=90))

    stops_at, because, code = _stop_announced(alice_api)

    assert (because, code) == ("after running 60 min (maximum age 60 min)", "max_age")
    _assert_kept_then_stopped(session, stops_at, because, code)
