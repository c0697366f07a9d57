"""The API's hot path does only what it must: a heartbeat no query once the token and the
session are known, a message one statement and one commit.
(Throughput is measured by bench/api_hot_path.py, not here.)"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import ApiToken, ChatMessage
from previews.models import Preview
from tests.builders import chat_session_create

SESSION = "/api/projects/proj-1/chat-sessions/sess-1"


def _transactions(queries: list[dict]) -> tuple[int, list[str]]:
    """How many transactions PostgreSQL commits for these statements (a statement outside
    BEGIN ... COMMIT is one of its own), and the statements other than BEGIN/COMMIT."""
    commits, inside, statements = 0, False, []
    for query in queries:
        sql = query["sql"]
        if sql == "BEGIN":
            inside = True
        elif sql == "COMMIT":
            inside, commits = False, commits + 1
        else:
            statements.append(sql.split()[0])
            commits += 0 if inside else 1
    return commits, statements


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_runs_no_query_once_the_token_and_the_session_are_known(alice, alice_api):
    session = chat_session_create(alice)
    Preview.objects.create(session=session, state="running", started_at=session.created_at)
    for _ in range(2):  # the token, the session and its stop inputs are read once
        alice_api.post(f"{SESSION}/heartbeat", {"client_id": "tab"}, "application/json")

    with CaptureQueriesContext(connection) as queries:
        response = alice_api.post(f"{SESSION}/heartbeat", {"client_id": "tab"}, "application/json")

    assert response.status_code == 200
    assert response.json()["viewers"] == 1
    assert response.json()["stops_at"] is not None
    assert queries.captured_queries == []  # presence and the stop inputs come from Redis


@pytest.mark.django_db(transaction=True)
def test_a_message_is_one_statement_and_one_commit(alice, alice_api):
    chat_session_create(alice)
    alice_api.post(SESSION, {"content": "first"}, "application/json")  # the token is known

    with CaptureQueriesContext(connection) as queries:
        response = alice_api.post(SESSION, {"content": "second"}, "application/json")

    assert response.status_code == 201
    commits, statements = _transactions(queries.captured_queries)
    assert (commits, statements) == (1, ["WITH"])
    assert ChatMessage.objects.count() == 2


def test_a_token_revoked_here_stops_at_once(alice, alice_api):
    chat_session_create(alice)
    assert alice_api.get(SESSION).status_code == 200  # now remembered

    ApiToken.objects.filter(user=alice).delete()

    assert alice_api.get(SESSION).status_code == 401
    heartbeat = alice_api.post(f"{SESSION}/heartbeat", {"client_id": "t"}, "application/json")
    assert heartbeat.status_code == 401


def test_a_token_revoked_elsewhere_stops_after_the_cache_time(alice, alice_api, monkeypatch):
    import kosuke.memo

    chat_session_create(alice)
    assert alice_api.get(SESSION).status_code == 200
    with connection.cursor() as cursor:  # as another process would: no signal here
        cursor.execute("DELETE FROM chat_apitoken")
    assert alice_api.get(SESSION).status_code == 200  # still remembered

    later = kosuke.memo.time.monotonic() + 31  # API_TOKEN_CACHE_SECONDS=30
    monkeypatch.setattr(kosuke.memo.time, "monotonic", lambda: later)

    assert alice_api.get(SESSION).status_code == 401


def test_a_deactivated_user_is_refused_at_once(alice, alice_api):
    chat_session_create(alice)
    assert alice_api.get(SESSION).status_code == 200

    alice.is_active = False
    alice.save()

    assert alice_api.get(SESSION).status_code == 401


def test_without_the_cache_every_request_looks_the_token_up(alice, alice_api, settings):
    settings.API_TOKEN_CACHE_SECONDS = 0
    chat_session_create(alice)
    alice_api.get(SESSION)

    with CaptureQueriesContext(connection) as queries:
        alice_api.get(SESSION)

    assert any("chat_apitoken" in q["sql"] for q in queries.captured_queries)
