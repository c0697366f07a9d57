"""Small builders for real rows, with explicit timestamps where a test depends on them."""

from __future__ import annotations

from datetime import datetime

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
