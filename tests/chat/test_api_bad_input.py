"""Bad input gets a 4xx JSON error that says what is wrong, and changes nothing."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db

SESSIONS = "/api/projects/proj-1/chat-sessions"
SESSION = f"{SESSIONS}/sess-1"
IN_AN_HOUR = (timezone.now() + td(hours=1)).isoformat()

BAD_REQUESTS = [
    # (method, path, raw body, status, words the error must contain)
    ("post", SESSION, b'{"content": "hi"', 400, "not valid JSON"),
    ("post", SESSION, b"", 422, "body"),
    ("post", SESSION, b'["hi"]', 422, "body"),
    ("post", SESSION, b"{}", 422, "content: Field required"),
    ("post", SESSION, b'{"content": ""}', 422, "content: String should have at least 1 character"),
    ("post", SESSION, b'{"content": 42}', 422, "content: Input should be a valid string"),
    ("post", SESSION, b'{"content": "hi", "role": "admin"}', 422, "role"),
    ("post", SESSION, b'{"content": "hi", "sender": "me"}', 422, "sender: Extra inputs"),
    ("post", SESSION, b'{"content": "nul \\u0000 byte"}', 422, "content: String should match"),
    ("post", SESSIONS, b'{"title": "' + b"x" * 201 + b'"}', 422, "at most 200 characters"),
    ("post", SESSIONS, b'{"session_id": "has space"}', 422, "session_id: String should match"),
    ("post", SESSIONS, b'{"session_id": "sess-1"}', 409, "already exists"),
    ("post", "/api/projects/bad%20id/chat-sessions", b"{}", 422, "project_id"),
    ("put", SESSION, b'{"title": null}', 422, "title: Input should be a valid string"),
    ("put", SESSION, b'{"idle_timeout_minutes": 0}', 422, "greater than or equal to 1"),
    ("put", SESSION, b'{"idle_timeout_minutes": "30"}', 422, "valid integer"),
    ("put", SESSION, b'{"busy_until": "tomorrow"}', 422, "busy_until"),
    ("put", SESSION, b'{"busy_until": "2031-01-01T00:00:00"}', 422, "timezone"),
    ("put", SESSION, b'{"busy_until": "2099-01-01T00:00:00Z"}', 400, "at most 24 h ahead"),
    ("put", SESSION, f'{{"last_activity_at": "{IN_AN_HOUR}"}}'.encode(), 400, "in the future"),
    ("put", SESSION, b'{"last_activity_at": null}', 422, "last_activity_at"),
    ("put", SESSION, b'{"owner": 2}', 422, "owner: Extra inputs"),
    ("post", f"{SESSION}/heartbeat", b"{}", 422, "client_id: Field required"),
    ("post", f"{SESSION}/heartbeat", b'{"client_id": "' + b"t" * 65 + b'"}', 422, "client_id"),
    ("put", SESSION, b'{"busy_until": "0001-01-01T00:00:00+05:00"}', 400, "before 2000-01-01"),
    ("put", SESSION, b'{"last_activity_at": "1999-12-31T23:59:59Z"}', 400, "before 2000-01-01"),
    ("put", SESSION, b'{"busy_until": "9999-12-31T23:59:59-23:59"}', 400, "too far in the future"),
    ("put", SESSION, b'{"last_activity_at": "9999-12-31T23:00-23:59"}', 400, "too far"),
    ("get", f"{SESSIONS}?offset=99999999999999999999", None, 422, "offset"),
    ("get", "/api/projects/a%00b/chat-sessions", None, 422, "project_id"),
    ("get", f"{SESSIONS}/s%00s", None, 422, "session_id"),
    ("post", f"{SESSIONS}/s%00s/preview", None, 422, "session_id"),
    ("get", f"{SESSION}/messages?limit=201", None, 422, "limit"),
    ("get", f"{SESSION}/messages?limit=-1", None, 422, "limit"),
    ("get", f"{SESSION}/messages?limit=abc", None, 422, "limit"),
]


def _snapshot():
    return (
        list(ChatSession.objects.values().order_by("pk")),
        list(ChatMessage.objects.values().order_by("pk")),
    )


@pytest.mark.parametrize(("method", "path", "raw_body", "status", "words"), BAD_REQUESTS)
def test_bad_input_is_refused_clearly_and_changes_nothing(
    alice, alice_api, method, path, raw_body, status, words
):
    chat_session_create(alice, title="Before", last_activity_at=timezone.now() - td(hours=1))
    before = _snapshot()

    if raw_body is None:
        response = getattr(alice_api, method)(path)
    else:
        response = getattr(alice_api, method)(path, raw_body, content_type="application/json")

    assert response.status_code == status
    assert words in response.json()["error"]
    assert _snapshot() == before


def test_an_oversized_body_is_refused_with_413(alice, alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    chat_session_create(alice)

    response = alice_api.post(SESSION, {"content": "x" * 2000}, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"] == "request body exceeds 1024 bytes"
    assert not ChatMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_a_json_503_with_retry_after(alice, alice_api, tmp_path):
    from django.db import connection

    real = connection.settings_dict.copy()
    connection.close()
    connection.close_pool()  # its open connections would still reach the real server
    # A socket folder where no PostgreSQL listens: connecting fails as when it is down.
    connection.settings_dict.update({"HOST": str(tmp_path), "PORT": ""})
    connection.settings_dict["OPTIONS"] = {**real["OPTIONS"], "host": str(tmp_path)}
    try:
        response = alice_api.post(SESSION, {"content": "hello"}, "application/json")
    finally:
        connection.close()
        connection.close_pool()
        connection.settings_dict.clear()
        connection.settings_dict.update(real)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Retry-After"] == "5"
    assert response.json()["error"].startswith("database (PostgreSQL) unavailable")


def test_a_validation_message_names_the_field_once(alice, alice_api):
    chat_session_create(alice)

    response = alice_api.put(SESSION, {"idle_timeout_minutes": 0}, "application/json")

    assert response.json()["error"] == (
        "body.idle_timeout_minutes: Input should be greater than or equal to 1"
    )
