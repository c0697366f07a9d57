"""Reads of chat sessions and messages, always scoped to their owner."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from chat.models import ChatMessage, ChatSession
from kosuke.errors import ApplicationError


def session_list(*, owner: AbstractBaseUser, project_id: str) -> QuerySet[ChatSession]:
    """The owner's sessions in a project, most recently active first."""
    return ChatSession.objects.filter(owner=owner, project_id=project_id).order_by(
        "-last_activity_at", "-id"
    )


def session_get(*, owner: AbstractBaseUser, project_id: str, session_id: str) -> ChatSession:
    """The owner's session; someone else's session is reported as missing, not forbidden."""
    session = ChatSession.objects.filter(
        owner=owner, project_id=project_id, session_id=session_id
    ).first()
    if session is None:
        raise ApplicationError(
            f"chat session {session_id!r} not found in project {project_id!r}", status=404
        )
    return session


def message_list(*, session: ChatSession) -> QuerySet[ChatMessage]:
    return ChatMessage.objects.filter(session=session).order_by("created_at", "id")
