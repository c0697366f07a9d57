"""The chat JSON API, happy paths."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chat.models import ChatMessage, ChatSession
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db

SESSIONS = "/api/projects/proj-1/chat-sessions"
SESSION = f"{SESSIONS}/sess-1"


def test_it_creates_a_session_with_a_generated_id(alice, alice_api):
    before = timezone.now()

    response = alice_api.post(SESSIONS, {"title": "Landing page"}, content_type="application/json")

    assert response.status_code == 201
    body = response.json()
    session = ChatSession.objects.get()
    assert body["session_id"] == session.session_id and len(session.session_id) == 32
    assert (body["project_id"], body["title"], session.owner) == ("proj-1", "Landing page", alice)
    assert parse_datetime(body["last_activity_at"]) >= before
    assert body["activity_level"] == "active"


def test_it_creates_a_session_with_the_given_id(alice_api):
    response = alice_api.post(SESSIONS, {"session_id": "sess-1"}, content_type="application/json")

    assert response.status_code == 201
    assert response.json()["session_id"] == "sess-1"
    assert ChatSession.objects.get().title == ""


def test_it_lists_the_callers_sessions_most_recent_first_and_paginated(alice, bob, alice_api):
    now = timezone.now()
    for minutes in range(5):
        chat_session_create(
            alice, session_id=f"s{minutes}", last_activity_at=now - td(minutes=minutes)
        )
    chat_session_create(bob, session_id="bobs")
    chat_session_create(alice, project_id="other", session_id="elsewhere")

    response = alice_api.get(SESSIONS, {"limit": 2, "offset": 1})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert [item["session_id"] for item in body["items"]] == ["s1", "s2"]


def test_it_returns_one_session(alice, alice_api):
    chat_session_create(alice, title="Shop", idle_timeout_minutes=15)

    response = alice_api.get(SESSION)

    assert response.status_code == 200
    assert response.json()["title"] == "Shop"
    assert response.json()["idle_timeout_minutes"] == 15


def test_it_edits_a_session_and_records_activity(alice, alice_api):
    old = timezone.now() - td(hours=1)
    busy_until = timezone.now() + td(hours=2)
    chat_session_create(alice, title="Old", last_activity_at=old)

    response = alice_api.put(
        SESSION,
        {"title": "New", "idle_timeout_minutes": 45, "busy_until": busy_until.isoformat()},
        content_type="application/json",
    )

    assert response.status_code == 200
    session = ChatSession.objects.get()
    assert (session.title, session.idle_timeout_minutes, session.busy_until) == (
        "New",
        45,
        busy_until,
    )
    assert session.last_activity_at > old


def test_an_edit_changes_only_the_fields_sent(alice, alice_api):
    chat_session_create(alice, title="Keep me", idle_timeout_minutes=15)

    response = alice_api.put(
        SESSION, {"idle_timeout_minutes": None}, content_type="application/json"
    )

    assert response.status_code == 200
    session = ChatSession.objects.get()
    assert (session.title, session.idle_timeout_minutes) == ("Keep me", None)


def test_an_edit_may_report_activity_at_a_past_time(alice, alice_api):
    now = timezone.now()
    chat_session_create(alice, last_activity_at=now - td(hours=1))
    reported = now - td(minutes=10)

    response = alice_api.put(
        SESSION, {"last_activity_at": reported.isoformat()}, content_type="application/json"
    )

    assert response.status_code == 200
    assert ChatSession.objects.get().last_activity_at == reported


def test_it_deletes_a_session_with_its_messages(alice, alice_api):
    session = chat_session_create(alice)
    ChatMessage.objects.create(session=session, content="hello")

    response = alice_api.delete(SESSION)

    assert response.status_code == 204
    assert not ChatSession.objects.exists()
    assert not ChatMessage.objects.exists()


def test_sending_a_message_stores_it_and_records_activity(alice, alice_api):
    old = timezone.now() - td(hours=1)
    chat_session_create(alice, last_activity_at=old)

    response = alice_api.post(
        SESSION, {"content": "add a pricing page"}, content_type="application/json"
    )

    assert response.status_code == 201
    message = ChatMessage.objects.get()
    assert (message.role, message.content) == ("user", "add a pricing page")
    assert response.json()["id"] == message.pk
    assert ChatSession.objects.get().last_activity_at == message.created_at > old


def test_it_lists_messages_in_order_and_paginated(alice, alice_api):
    session = chat_session_create(alice)
    start = timezone.now() - td(minutes=10)
    for n in range(4):
        ChatMessage.objects.create(
            session=session, content=f"m{n}", created_at=start + td(minutes=n)
        )

    response = alice_api.get(f"{SESSION}/messages", {"limit": 3})

    assert response.status_code == 200
    assert response.json()["count"] == 4
    assert [m["content"] for m in response.json()["items"]] == ["m0", "m1", "m2"]


def test_a_logged_in_browser_uses_the_api_with_csrf(alice):
    chat_session_create(alice)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.get("/admin/login/")  # a page that hands out the CSRF cookie
    csrf_token = browser.cookies["csrftoken"].value

    refused = browser.post(SESSION, {"content": "hi"}, content_type="application/json")
    accepted = browser.post(
        SESSION,
        {"content": "hi"},
        content_type="application/json",
        headers={"X-CSRFToken": csrf_token},
    )

    assert refused.status_code == 403
    assert accepted.status_code == 201
    assert ChatMessage.objects.count() == 1


def test_it_serves_the_openapi_schema(client):
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/projects/{project_id}/chat-sessions/{session_id}/heartbeat" in paths
