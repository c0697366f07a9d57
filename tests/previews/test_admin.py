"""Admin actions on sessions: open a preview, stop it now."""

from __future__ import annotations

import pytest

from previews.engine import engine_at
from previews.models import Preview
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat/chatsession/"


def _act(operator, action, *sessions):
    return operator.post(
        CHANGELIST,
        {"action": action, "_selected_action": [s.pk for s in sessions]},
        follow=True,
    )


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_open_and_stop_actions_drive_the_preview(worker, alice, operator):
    session = chat_session_create(alice)

    opened = _act(operator, "open_preview", session)
    state_after_open = Preview.objects.get().state
    stopped = _act(operator, "stop_preview_now", session)

    assert state_after_open == "running"
    preview = Preview.objects.get()
    assert (preview.state, preview.last_stop_reason) == ("stopped", "manual")
    assert preview.last_stop_detail == "stopped by operator (admin site)"
    assert _messages(opened) == ["Opened the preview of 1 session."]
    assert _messages(stopped) == ["Stopped the preview of 1 session."]
    # The session's page says what became of its preview.
    page = operator.get(f"{CHANGELIST}{session.pk}/change/").content.decode()
    assert "stopped by operator (admin site) at " in page
    # The preview's own page is read-only through and through.
    page = operator.get(f"/admin/previews/preview/{preview.pk}/change/").content.decode()
    assert "Claim token" not in page and "/delete/" not in page


def test_the_session_list_shows_the_preview_state(worker, alice, operator):
    chat_session_create(alice, session_id="with-preview")
    chat_session_create(alice, session_id="without")
    _act(operator, "open_preview", *list(alice.chat_sessions.filter(session_id="with-preview")))

    page = operator.get(CHANGELIST, {"preview__state": "running"}).content.decode()

    assert ">with-preview<" in page and ">without<" not in page


def test_an_engine_failure_is_reported_per_session(worker, alice, operator, settings, tmp_path):
    session = chat_session_create(alice)
    settings.DOCKER_HOST = f"unix://{tmp_path}/docker.sock"
    engine_at.cache_clear()
    try:
        response = _act(operator, "open_preview", session)
    finally:
        engine_at.cache_clear()

    [message] = _messages(response)
    assert message.startswith(
        f"proj-1/sess-1: Docker engine local unreachable at {settings.DOCKER_HOST}"
    )
