"""The preview API: open (or restart), inspect, stop; same access rules as the chat API."""

from __future__ import annotations

import pytest
from django.test import Client

from previews.engine import engine_at
from previews.models import Preview
from tests.builders import api_client, chat_session_create, user_create

pytestmark = pytest.mark.django_db

PREVIEW = "/api/projects/proj-1/chat-sessions/sess-1/preview"


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
        f"Docker engine unreachable at {settings.DOCKER_HOST}"
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
    assert response.json()["error"].startswith("no worker answered within 1 s")
