"""Writes to chat sessions and messages, with the activity rules applied in one place."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from chat.heartbeat_cache import stop_inputs_changed
from chat.models import ChatMessage, ChatSession
from chat.selectors import session_missing
from kosuke.errors import ApplicationError

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def moment_checked(moment: datetime, *, name: str) -> datetime:
    """`moment` in UTC, or a refusal (400) when it is before 2000 or past the year 9999.

    PostgreSQL accepts dates it cannot hand back to Python (year 1 in another time zone
    becomes 1 BC), and nothing in this service happened before 2000.
    """
    too_early = ApplicationError(f"{name} must not be before {EARLIEST:%Y-%m-%d}")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # past either end of what a datetime can hold, once in UTC
        if moment.year < EARLIEST.year:
            raise too_early from None
        raise ApplicationError(f"{name} is too far in the future") from None
    if moment < EARLIEST:
        raise too_early
    return moment


def activity_record(
    *, session: ChatSession, at: datetime | None = None, now: datetime | None = None
) -> bool:
    """Move `session.last_activity_at` forward to `at` (default: now); never backward.

    A time in the future is refused. The conditional UPDATE keeps the value monotonic
    even when two requests race. Returns whether the stored value moved.
    """
    now = now or timezone.now()
    at = at or now
    if at > now:
        raise ApplicationError(
            f"activity time {at.isoformat()} is in the future (server time {now.isoformat()})"
        )
    moved = ChatSession.objects.filter(pk=session.pk, last_activity_at__lt=at).update(
        last_activity_at=at
    )
    if moved:
        session.last_activity_at = at
        stop_inputs_changed([session.pk])
    return bool(moved)


def session_create(
    *,
    owner: AbstractBaseUser,
    project_id: str,
    title: str = "",
    session_id: str | None = None,
    now: datetime | None = None,
) -> ChatSession:
    """Create a session; the server picks a `session_id` when none is given."""
    now = now or timezone.now()
    session = ChatSession(
        owner=owner,
        project_id=project_id,
        session_id=session_id or uuid.uuid4().hex,
        title=title,
        created_at=now,
        last_activity_at=now,
    )
    try:
        with transaction.atomic():
            session.save()
    except IntegrityError as exc:
        raise ApplicationError(
            f"session_id {session.session_id!r} already exists in project {project_id!r}",
            status=409,
        ) from exc
    return session


def session_update(
    *, session: ChatSession, data: Mapping[str, Any], now: datetime | None = None
) -> ChatSession:
    """Apply the given fields; editing a session counts as activity.

    `last_activity_at` in `data` reports activity at that (past) time. A refused edit
    changes nothing.
    """
    now = now or timezone.now()
    data = dict(data)
    for name in ("busy_until", "last_activity_at"):
        if data.get(name) is not None:
            data[name] = moment_checked(data[name], name=name)
    busy_until = data.get("busy_until")
    keepalive_limit = now + timedelta(hours=settings.KEEPALIVE_MAX_HOURS)
    if busy_until is not None and busy_until > keepalive_limit:
        raise ApplicationError(
            f"busy_until may be at most {settings.KEEPALIVE_MAX_HOURS} h ahead "
            f"(until {keepalive_limit.isoformat()})"
        )
    fields = [name for name in data if name != "last_activity_at"]
    # A refused activity time rolls the whole edit back.
    with transaction.atomic():
        for name in fields:
            setattr(session, name, data[name])
        session.save(update_fields=[*fields, "updated_at"])
        activity_record(session=session, at=data.get("last_activity_at") or now, now=now)
    return session


def session_delete(*, session: ChatSession) -> None:
    session.delete()


# The message and the activity in one statement, so one round trip and one commit. The
# activity moves forward only (GREATEST), as activity_record's conditional UPDATE does.
_MESSAGE_INSERT = """
WITH session AS (
    UPDATE chat_chatsession
    SET last_activity_at = GREATEST(last_activity_at, %(now)s)
    WHERE owner_id = %(owner)s AND project_id = %(project_id)s AND session_id = %(session_id)s
    RETURNING id
)
INSERT INTO chat_chatmessage (session_id, role, content, created_at)
SELECT id, %(role)s, %(content)s, %(now)s FROM session
RETURNING id, session_id, role, content, created_at
"""


def message_send(
    *,
    owner: AbstractBaseUser,
    project_id: str,
    session_id: str,
    content: str,
    role: str = ChatMessage.Role.USER,
    now: datetime | None = None,
) -> ChatMessage:
    """Store a message in the owner's session and record the activity, both or neither
    (404 as `session_get` when the session is not the owner's). Every message is the
    hot path's other half: one statement, no read first."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _MESSAGE_INSERT,
            {
                "now": now,
                "owner": owner.pk,
                "project_id": project_id,
                "session_id": session_id,
                "role": role,
                "content": content,
            },
        )
        row = cursor.fetchone()
    if row is None:
        raise session_missing(project_id, session_id)
    message = ChatMessage.from_db(
        connection.alias, ["id", "session_id", "role", "content", "created_at"], row
    )
    stop_inputs_changed([message.session_id])
    return message
