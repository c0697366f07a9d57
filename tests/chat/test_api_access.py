"""Who may call the chat API: anonymous callers get 401, other users' sessions are 404."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db

SESSIONS = "/api/projects/proj-1/chat-sessions"
SESSION = f"{SESSIONS}/sess-1"

EVERY_ENDPOINT = [
    ("get", SESSIONS, None),
    ("post", SESSIONS, {"title": "x"}),
    ("get", SESSION, None),
    ("put", SESSION, {"title": "taken over"}),
    ("delete", SESSION, None),
    ("post", SESSION, {"content": "hello"}),
    ("get", f"{SESSION}/messages", None),
    ("post", f"{SESSION}/heartbeat", {"client_id": "tab-1"}),
]
ENDPOINTS_OF_ONE_SESSION = [call for call in EVERY_ENDPOINT if call[1] != SESSIONS]


def _call(client: Client, method: str, path: str, body: dict | None):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, content_type="application/json")


def _snapshot():
    return (
        list(ChatSession.objects.values().order_by("pk")),
        list(ChatMessage.objects.values().order_by("pk")),
    )


@pytest.mark.parametrize(("method", "path", "body"), EVERY_ENDPOINT)
def test_anonymous_callers_get_401_and_change_nothing(alice, method, path, body):
    chat_session_create(alice, last_activity_at=timezone.now() - td(hours=1))
    before = _snapshot()

    response = _call(Client(), method, path, body)

    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]
    assert _snapshot() == before


@pytest.mark.parametrize(("method", "path", "body"), EVERY_ENDPOINT)
def test_an_unknown_token_gets_401(alice, method, path, body):
    chat_session_create(alice)
    intruder = Client(headers={"Authorization": "Bearer ksk_not-a-real-token"})

    assert _call(intruder, method, path, body).status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS_OF_ONE_SESSION)
def test_another_users_session_is_not_found_and_unchanged(alice, bob_api, method, path, body):
    chat_session_create(alice, title="Alice's", last_activity_at=timezone.now() - td(hours=1))
    before = _snapshot()

    response = _call(bob_api, method, path, body)

    assert response.status_code == 404
    assert response.json()["error"] == "chat session 'sess-1' not found in project 'proj-1'"
    assert _snapshot() == before


def test_the_list_shows_only_the_callers_sessions(alice, bob_api):
    chat_session_create(alice)

    response = bob_api.get(SESSIONS)

    assert response.json() == {"items": [], "count": 0}


def test_an_inactive_users_token_stops_working(alice, alice_api):
    chat_session_create(alice)
    alice.is_active = False
    alice.save()

    assert alice_api.get(SESSION).status_code == 401


def test_another_users_ids_are_free_to_use(alice, bob_api):
    chat_session_create(alice)

    response = bob_api.post(SESSIONS, {"session_id": "sess-1"}, content_type="application/json")

    assert response.status_code == 201
    assert ChatSession.objects.filter(session_id="sess-1").count() == 2
