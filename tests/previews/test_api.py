"""The preview API: open (or restart), inspect, stop; same access rules as the chat API."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta as td

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import ChatSession
from cleanup.models import CleanupRun
from cleanup.stops import stop_inline
from cleanup.sweep import sweep
from previews.engine import engine_at
from previews.models import Preview
from tests.builders import api_client, chat_session_create, user_create

pytestmark = pytest.mark.django_db

SESSION = "/api/projects/proj-1/chat-sessions/sess-1"
PREVIEW = f"{SESSION}/preview"


def test_post_opens_the_preview(worker, alice, alice_api):
    chat_session_create(alice)

    response = alice_api.post(PREVIEW)

    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "running"
    assert [(c["state"], c["kept"]) for c in body["containers"]] == [("running", False)]


def test_delete_stops_it_and_get_says_why(worker, alice, alice_api):
    chat_session_create(alice)
    alice_api.post(PREVIEW)

    stopped = alice_api.delete(PREVIEW)
    shown = alice_api.get(PREVIEW)

    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    body = shown.json()
    assert (body["state"], body["last_stop_reason"]) == ("stopped", "manual")
    assert body["last_stop"].startswith("stopped by alice at ")
    assert [c["state"] for c in body["containers"]] == ["exited"]


def test_post_again_restarts_a_stopped_preview(worker, alice, alice_api):
    chat_session_create(alice)
    first = alice_api.post(PREVIEW).json()["containers"][0]["id"]
    alice_api.delete(PREVIEW)

    again = alice_api.post(PREVIEW).json()

    assert again["state"] == "running"
    assert [c["id"] for c in again["containers"]] == [first]


def _moment(answered: str) -> datetime:
    return datetime.fromisoformat(answered)


def test_open_status_and_heartbeat_say_when_the_preview_stops(worker, alice, alice_api, settings):
    settings.CLEANUP_THRESHOLD_MINUTES = 30
    chat_session_create(alice)

    opened = alice_api.post(PREVIEW).json()
    shown = alice_api.get(PREVIEW).json()
    beat = alice_api.post(f"{SESSION}/heartbeat", {"client_id": "t"}, "application/json").json()

    opened_at = ChatSession.objects.get().last_activity_at  # opening is activity
    assert abs(_moment(opened["stops_at"]) - (opened_at + td(minutes=30))) < td(milliseconds=1)
    assert shown["stops_at"] == opened["stops_at"] == beat["stops_at"]
    assert shown["stops_because"] == "after 30 min without activity (threshold 30 min)"
    assert shown["stops_reason"] == "inactive"


def test_reopening_says_why_the_preview_had_stopped(worker, alice, alice_api):
    session = chat_session_create(alice)
    alice_api.post(PREVIEW)
    ChatSession.objects.filter(pk=session.pk).update(
        last_activity_at=timezone.now() - td(minutes=45)
    )
    sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)
    assert Preview.objects.get().state == "stopped"

    reopened = alice_api.post(PREVIEW).json()

    assert reopened["state"] == "running"
    assert reopened["last_stop_reason"] == "inactive"
    assert reopened["last_stop"].startswith("stopped after 45 min without activity")
    assert _moment(reopened["stopped_at"]) < _moment(reopened["started_at"])
    assert _moment(reopened["stops_at"]) > timezone.now() + td(minutes=29)


def test_a_preview_kept_by_label_never_stops_by_itself(
    worker, previews_on_docker, preview_image, alice, alice_api
):
    session = chat_session_create(alice)
    alice_api.post(PREVIEW)
    label = f"kosuke.session_pk={session.pk}"
    [container] = previews_on_docker.containers.list(filters={"label": label})
    container.remove(force=True)
    previews_on_docker.containers.run(
        preview_image, detach=True, labels={**container.labels, "kosuke.keep": "true"}
    )

    shown = alice_api.get(PREVIEW).json()

    assert [c["kept"] for c in shown["containers"]] == [True]
    assert (shown["stops_at"], shown["stops_because"], shown["stops_reason"]) == (None, None, None)


def test_another_users_preview_is_not_found(previews_on_docker, alice):
    chat_session_create(alice)
    bob_api = api_client(user_create("bob"))

    responses = [bob_api.post(PREVIEW), bob_api.get(PREVIEW), bob_api.delete(PREVIEW)]

    assert [r.status_code for r in responses] == [404, 404, 404]
    assert not Preview.objects.exists()


def test_anonymous_callers_get_401(alice):
    chat_session_create(alice)

    assert Client().post(PREVIEW).status_code == 401
    assert not Preview.objects.exists()


def test_an_unreachable_engine_is_a_503_that_says_where(
    worker, alice, alice_api, settings, tmp_path
):
    chat_session_create(alice)
    settings.DOCKER_HOST = f"unix://{tmp_path}/docker.sock"
    engine_at.cache_clear()
    try:
        response = alice_api.post(PREVIEW)
    finally:
        engine_at.cache_clear()

    assert response.status_code == 503
    assert response.json()["error"].startswith(
        f"Docker engine local unreachable at {settings.DOCKER_HOST}"
    )
    assert Preview.objects.get().state == "failed"


def test_a_missing_image_is_a_502(worker, alice, alice_api, settings):
    chat_session_create(alice)
    settings.PREVIEW_IMAGE = "kosuke-no-such-image:latest"

    response = alice_api.post(PREVIEW)

    assert response.status_code == 502
    assert "kosuke-no-such-image" in response.json()["error"]


def test_without_a_worker_the_api_says_so(alice, alice_api, settings):
    chat_session_create(alice)
    settings.PREVIEW_REQUEST_TIMEOUT_SECONDS = 1

    response = alice_api.post(PREVIEW)

    assert response.status_code == 503
    assert response.json()["error"].startswith("no worker of engine local answered within 1 s")
