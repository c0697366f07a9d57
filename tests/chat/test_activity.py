"""Activity rules: last_activity_at only moves forward and never into the future."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.db import DataError
from django.utils import timezone

from chat.models import ChatMessage, ChatSession, activity_level
from chat.services import activity_record, message_send, session_update
from kosuke.errors import ApplicationError
from tests.builders import chat_session_create, session_address

pytestmark = pytest.mark.django_db


def test_it_moves_activity_forward(alice):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(minutes=40))

    assert activity_record(session=session, now=now) is True

    session.refresh_from_db()
    assert session.last_activity_at == now


def test_it_never_moves_activity_backward(alice):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(minutes=5))

    assert activity_record(session=session, at=now - td(minutes=20), now=now) is False

    session.refresh_from_db()
    assert session.last_activity_at == now - td(minutes=5)


def test_it_keeps_the_newer_time_when_a_stale_copy_writes(alice):
    # Two requests hold the same row; the one carrying the older time must not win.
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(hours=1))
    stale_copy = ChatSession.objects.get(pk=session.pk)

    activity_record(session=session, at=now, now=now)
    activity_record(session=stale_copy, at=now - td(minutes=3), now=now)

    session.refresh_from_db()
    assert session.last_activity_at == now


def test_it_refuses_activity_in_the_future(alice):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(minutes=5))

    with pytest.raises(ApplicationError, match="in the future"):
        activity_record(session=session, at=now + td(seconds=1), now=now)

    session.refresh_from_db()
    assert session.last_activity_at == now - td(minutes=5)


def test_sending_a_message_records_activity(alice):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(hours=2))

    message = message_send(**session_address(session), content="make the button blue", now=now)

    session.refresh_from_db()
    assert session.last_activity_at == now == message.created_at


@pytest.mark.django_db(transaction=True)  # the service's own transaction, not the test's
def test_a_failed_message_write_leaves_activity_alone(alice):
    # The message and the activity share one transaction: a message that cannot be
    # stored (here: NUL bytes, which PostgreSQL text refuses) must not bump activity.
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(hours=2))

    with pytest.raises(DataError):
        message_send(**session_address(session), content="bad \x00 byte", now=now)

    session.refresh_from_db()
    assert session.last_activity_at == now - td(hours=2)
    assert not ChatMessage.objects.exists()


def test_editing_a_session_records_activity(alice):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(hours=2))

    session_update(session=session, data={"title": "Landing page"}, now=now)

    session.refresh_from_db()
    assert (session.title, session.last_activity_at) == ("Landing page", now)


def test_an_edit_with_future_activity_changes_nothing(alice):
    now = timezone.now()
    session = chat_session_create(alice, title="Old", last_activity_at=now - td(hours=2))

    with pytest.raises(ApplicationError, match="in the future"):
        session_update(
            session=session,
            data={"title": "New", "last_activity_at": now + td(minutes=1)},
            now=now,
        )

    session.refresh_from_db()
    assert (session.title, session.last_activity_at) == ("Old", now - td(hours=2))


def test_it_refuses_a_keepalive_too_far_ahead(alice):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(hours=2))

    with pytest.raises(ApplicationError, match="busy_until"):
        session_update(session=session, data={"busy_until": now + td(days=30)}, now=now)

    session.refresh_from_db()
    assert session.busy_until is None
    assert session.last_activity_at == now - td(hours=2)


@pytest.mark.parametrize(
    ("quiet_for", "level"),
    [
        (td(seconds=0), "active"),
        (td(minutes=1, seconds=59), "active"),
        (td(minutes=2), "idle"),
        (td(minutes=9, seconds=59), "idle"),
        (td(minutes=10), "background"),
        (td(days=3), "background"),
    ],
)
def test_it_classifies_activity_level_by_quiet_time(alice, quiet_for, level):
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - quiet_for)

    assert activity_level(now - session.last_activity_at) == level


@pytest.mark.parametrize(
    ("quiet_for", "idle_timeout_minutes", "level"),
    [
        (td(seconds=50), 1, "active"),
        (td(seconds=90), 1, "background"),  # past its own threshold: never "active"
        (td(minutes=3), 5, "idle"),
        (td(minutes=6), 5, "background"),
        (td(minutes=6), None, "idle"),  # the default threshold (30 min) is longer
    ],
)
def test_the_levels_end_at_a_shorter_threshold(alice, quiet_for, idle_timeout_minutes, level):
    now = timezone.now()
    session = chat_session_create(
        alice, last_activity_at=now - quiet_for, idle_timeout_minutes=idle_timeout_minutes
    )

    assert session.activity_level(now) == level


def test_the_level_filter_agrees_with_each_sessions_level(alice, settings):
    from chat.selectors import sessions_at_level

    settings.CLEANUP_THRESHOLD_MINUTES = 5  # shorter than the 10-minute band
    now = timezone.now()
    quiet = [td(seconds=30), td(seconds=90), td(minutes=3), td(minutes=7), td(minutes=20)]
    for n, (quiet_for, timeout) in enumerate(
        (q, t) for q in quiet for t in (None, 1, 2, 4, 15, 60)
    ):
        quiet_since = now - quiet_for
        chat_session_create(
            alice, session_id=f"s{n}", last_activity_at=quiet_since, idle_timeout_minutes=timeout
        )
    sessions = list(ChatSession.objects.all())

    for level in ("active", "idle", "background"):
        found = set(sessions_at_level(ChatSession.objects.all(), level, now))
        assert found == {s for s in sessions if s.activity_level(now) == level}, level
