"""The heartbeat reads what it needs of a session from Redis (chat.heartbeat_cache): no
query in steady state, and every committed change to the stop rules' inputs is seen by
the next heartbeat."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta as td

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.heartbeat_cache import inputs_key, inputs_store_if_current, version_key
from chat.models import ChatSession
from chat.services import message_send
from kosuke.redis_client import redis_client
from previews.models import Preview, PreviewState
from tests.builders import chat_session_create, session_address

pytestmark = pytest.mark.django_db(transaction=True)  # the cache is told after commits

HEARTBEAT = "/api/projects/proj-1/chat-sessions/sess-1/heartbeat"


def _heartbeat(api) -> tuple[dict, list[str]]:
    """The answer, and the SQL statements the heartbeat ran."""
    with CaptureQueriesContext(connection) as queries:
        response = api.post(HEARTBEAT, {"client_id": "tab"}, "application/json")
    assert response.status_code == 200, response.content
    return response.json(), [q["sql"] for q in queries.captured_queries]


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def running(alice):
    session = chat_session_create(alice, last_activity_at=timezone.now() - td(minutes=10))
    Preview.objects.create(
        session=session, state=PreviewState.RUNNING, started_at=session.created_at
    )
    return session


def test_once_the_session_is_known_a_heartbeat_runs_no_query(running, alice_api):
    _heartbeat(alice_api)  # reads the session (and learns its pk)
    _heartbeat(alice_api)  # reads what the stop rules need, and keeps it

    body, statements = _heartbeat(alice_api)

    assert statements == []
    expected = running.last_activity_at + td(minutes=30)
    assert abs(_moment(body["stops_at"]) - expected) < td(milliseconds=1)


def test_a_message_moves_the_next_heartbeats_stop(running, alice_api):
    for _ in range(3):
        before, _ = _heartbeat(alice_api)

    message = message_send(**session_address(running), content="one more change")

    after, statements = _heartbeat(alice_api)
    assert len(statements) == 1  # read again
    assert _moment(after["stops_at"]) > _moment(before["stops_at"])
    assert abs(_moment(after["stops_at"]) - (message.created_at + td(minutes=30))) < td(
        milliseconds=1
    )


def test_a_stopped_preview_and_an_edited_timeout_show_at_once(running, alice_api):
    for _ in range(3):
        _heartbeat(alice_api)

    running.idle_timeout_minutes = 90  # as the admin saves it
    running.save()
    assert _heartbeat(alice_api)[0]["stops_because"].endswith("(threshold 90 min)")

    preview = running.preview
    preview.transition(
        from_states=[PreviewState.RUNNING], to=PreviewState.STOPPED, now=timezone.now()
    )
    assert _heartbeat(alice_api)[0]["stops_at"] is None


def test_a_deleted_session_gets_404_though_its_name_was_known(running, alice_api):
    for _ in range(3):
        _heartbeat(alice_api)

    ChatSession.objects.filter(pk=running.pk).delete()

    response = alice_api.post(HEARTBEAT, {"client_id": "tab"}, "application/json")
    assert response.status_code == 404


def test_a_read_that_raced_with_a_change_is_not_kept(running):
    redis = redis_client()
    read_at = redis.get(version_key(running.pk))  # before the read
    redis.incr(version_key(running.pk))  # a change committed meanwhile

    async_to_sync(inputs_store_if_current)(running.pk, {"stale": True}, read_at)

    assert redis.get(inputs_key(running.pk)) is None


def test_inputs_read_before_the_last_change_are_read_again(running, alice_api):
    for _ in range(3):
        _heartbeat(alice_api)
    # As if a bump arrived after another process cached the inputs.
    redis_client().incr(version_key(running.pk))

    _, statements = _heartbeat(alice_api)

    assert len(statements) == 1
