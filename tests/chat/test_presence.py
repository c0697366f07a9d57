"""Presence: heartbeats from open preview panels, kept in Redis, never written to the database."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta as td

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.presence import heartbeat_record, sessions_presence
from kosuke.redis_client import redis_client
from previews.models import Preview
from tests.builders import chat_session_create


def record(**arguments):
    """The heartbeat's presence, called from sync code (it is async: the hottest route)."""
    presence, _ = async_to_sync(heartbeat_record)(**arguments)
    return presence


pytestmark = pytest.mark.django_db

HEARTBEAT = "/api/projects/proj-1/chat-sessions/sess-1/heartbeat"


def test_a_session_without_heartbeats_has_no_viewers(alice):
    session = chat_session_create(alice)

    presence = sessions_presence([session.pk])[session.pk]

    assert (presence.viewers, presence.last_seen_at) == (0, None)


def test_it_counts_each_client_once(alice):
    now = timezone.now()
    session = chat_session_create(alice)

    record(session_pk=session.pk, client_id="tab-1", now=now - td(seconds=20))
    record(session_pk=session.pk, client_id="tab-1", now=now - td(seconds=5))
    presence = record(session_pk=session.pk, client_id="tab-2", now=now)

    assert presence.viewers == 2
    assert presence.last_seen_at == now


def test_a_client_silent_past_the_ping_timeout_is_no_longer_a_viewer(alice, settings):
    settings.PRESENCE_PING_TIMEOUT_SECONDS = 60
    now = timezone.now()
    session = chat_session_create(alice)
    record(session_pk=session.pk, client_id="gone", now=now - td(seconds=61))
    record(session_pk=session.pk, client_id="here", now=now - td(seconds=59))

    presence = sessions_presence([session.pk], now=now)[session.pk]

    assert presence.viewers == 1
    assert presence.last_seen_at.timestamp() == pytest.approx((now - td(seconds=59)).timestamp())


def test_it_remembers_when_the_last_viewer_left(alice):
    now = timezone.now()
    session = chat_session_create(alice)
    record(session_pk=session.pk, client_id="tab-1", now=now - td(minutes=10))

    presence = sessions_presence([session.pk], now=now)[session.pk]

    assert presence.viewers == 0
    assert presence.last_seen_at.timestamp() == pytest.approx((now - td(minutes=10)).timestamp())


def test_it_reads_many_sessions_in_one_round_trip(alice):
    now = timezone.now()
    watched = chat_session_create(alice, session_id="watched")
    unwatched = chat_session_create(alice, session_id="unwatched")
    record(session_pk=watched.pk, client_id="tab-1", now=now)

    presence = sessions_presence([watched.pk, unwatched.pk], now=now)

    assert (presence[watched.pk].viewers, presence[unwatched.pk].viewers) == (1, 0)


def test_presence_expires_from_redis(alice):
    session = chat_session_create(alice)

    record(session_pk=session.pk, client_id="tab-1")

    assert 0 < redis_client().ttl(f"presence:session:{session.pk}") <= 24 * 3600


def test_the_heartbeat_endpoint_writes_nothing_to_the_database(alice, alice_api):
    session = chat_session_create(alice, last_activity_at=timezone.now() - td(hours=1))

    with CaptureQueriesContext(connection) as queries:
        response = alice_api.post(
            HEARTBEAT, {"client_id": "tab-1"}, content_type="application/json"
        )

    assert response.status_code == 200
    assert response.json()["viewers"] == 1
    writes = [q["sql"] for q in queries if not q["sql"].lstrip().upper().startswith("SELECT")]
    assert writes == []
    session.refresh_from_db()
    assert session.last_activity_at < timezone.now() - td(minutes=59)


def test_the_heartbeat_endpoint_says_when_redis_is_down(alice, alice_api, settings):
    chat_session_create(alice)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
    redis_client.cache_clear()
    try:
        response = alice_api.post(
            HEARTBEAT, {"client_id": "tab-1"}, content_type="application/json"
        )
    finally:
        redis_client.cache_clear()

    assert response.status_code == 503
    assert response.json()["error"].startswith("presence store (Redis) unavailable")


def _same_moment(answered: str, expected: datetime) -> bool:
    """The API gives times to the millisecond."""
    return abs(datetime.fromisoformat(answered) - expected) < td(milliseconds=1)


def _heartbeat(api) -> dict:
    response = api.post(HEARTBEAT, {"client_id": "tab-1"}, content_type="application/json")
    assert response.status_code == 200
    return response.json()


def _preview_row(session, **fields) -> Preview:
    """A preview row as the worker leaves it; the heartbeat reads only the database."""
    return Preview.objects.create(session=session, engine="unix:///nowhere", **fields)


def test_the_heartbeat_says_when_an_idle_preview_stops_and_why(alice, alice_api, settings):
    settings.CLEANUP_THRESHOLD_MINUTES = 30
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(minutes=10))
    _preview_row(session, state="running", started_at=now - td(hours=1))

    body = _heartbeat(alice_api)

    assert _same_moment(body["stops_at"], session.last_activity_at + td(minutes=30))
    assert body["stops_because"] == "after 30 min without activity (threshold 30 min)"
    assert body["stops_reason"] == "inactive"


def test_the_heartbeat_follows_the_session_timeout_and_keep_alive(alice, alice_api):
    now = timezone.now()
    busy_until = now + td(hours=2)
    session = chat_session_create(
        alice, last_activity_at=now, idle_timeout_minutes=60, busy_until=busy_until
    )
    _preview_row(session, state="running", started_at=now)

    body = _heartbeat(alice_api)

    assert _same_moment(body["stops_at"], busy_until)
    assert body["stops_because"] == (
        f"when its keep-alive ends at {busy_until:%Y-%m-%d %H:%M} UTC, "
        "after 120 min without activity (threshold 60 min)"
    )


def test_the_heartbeat_says_the_maximum_age_that_activity_cannot_move(alice, alice_api, settings):
    settings.PREVIEW_MAX_AGE_MINUTES = 60
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now)
    preview = _preview_row(session, state="running", started_at=now - td(minutes=50))

    body = _heartbeat(alice_api)

    assert _same_moment(body["stops_at"], preview.started_at + td(minutes=60))
    assert body["stops_reason"] == "max_age"


@pytest.mark.parametrize("state", [None, "stopped", "starting"])
def test_the_heartbeat_of_a_preview_not_running_has_no_stop_due(alice, alice_api, state):
    session = chat_session_create(alice, last_activity_at=timezone.now() - td(hours=3))
    if state:
        _preview_row(session, state=state)

    body = _heartbeat(alice_api)

    assert (body["stops_at"], body["stops_because"], body["stops_reason"]) == (None, None, None)
    assert body["viewers"] == 1
