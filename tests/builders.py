"""Small builders for real rows, with explicit timestamps where a test depends on them."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from chat.models import ChatSession
from chat.tokens import api_token_create


def user_create(username: str, **fields) -> User:
    return User.objects.create_user(username=username, **fields)


def chat_session_create(
    owner: User,
    *,
    project_id: str = "proj-1",
    session_id: str = "sess-1",
    last_activity_at: datetime | None = None,
    **fields,
) -> ChatSession:
    now = timezone.now()
    return ChatSession.objects.create(
        owner=owner,
        project_id=project_id,
        session_id=session_id,
        last_activity_at=last_activity_at or now,
        **fields,
    )


def api_client(user: User) -> Client:
    """A client that authenticates like an integration: with a bearer token."""
    _token, raw_token = api_token_create(user=user)
    return Client(headers={"Authorization": f"Bearer {raw_token}"})


def session_with_running_preview(
    owner: User, *, session_id: str, idle_for: timedelta, **fields
) -> ChatSession:
    """A session whose preview runs on the real engine, last active `idle_for` ago."""
    from previews.services import preview_open

    session = chat_session_create(owner, session_id=session_id, **fields)
    preview_open(session=session)
    ChatSession.objects.filter(pk=session.pk).update(last_activity_at=timezone.now() - idle_for)
    session.refresh_from_db()
    return session
