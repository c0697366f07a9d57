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
    assert preview.last_stop_detail == "stopped by operator in the admin"
    assert _messages(opened) == ["opened the preview of 1 session(s)"]
    assert _messages(stopped) == ["stopped the preview of 1 session(s)"]


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
    assert message.startswith(f"proj-1/sess-1: Docker engine unreachable at {settings.DOCKER_HOST}")
