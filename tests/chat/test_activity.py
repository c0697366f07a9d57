"""Activity rules: last_activity_at only moves forward and never into the future."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.db import DataError
from django.utils import timezone

from chat.models import ChatMessage, ChatSession, activity_level
from chat.services import activity_record, message_send, session_update
from kosuke.errors import ApplicationError
from tests.builders import chat_session_create

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

    message = message_send(session=session, content="make the button blue", now=now)

    session.refresh_from_db()
    assert session.last_activity_at == now == message.created_at


@pytest.mark.django_db(transaction=True)  # the service's own transaction, not the test's
def test_a_failed_message_write_leaves_activity_alone(alice):
    # The message and the activity share one transaction: a message that cannot be
    # stored (here: NUL bytes, which PostgreSQL text refuses) must not bump activity.
    now = timezone.now()
    session = chat_session_create(alice, last_activity_at=now - td(hours=2))

    with pytest.raises(DataError):
        message_send(session=session, content="bad \x00 byte", now=now)

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
