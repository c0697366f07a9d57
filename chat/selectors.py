"""Reads of chat sessions and messages, always scoped to their owner."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, Q, QuerySet, Value
from django.db.models.functions import Coalesce

from chat.models import ACTIVE_WITHIN, IDLE_WITHIN, ActivityLevel, ChatMessage, ChatSession
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
        raise session_missing(project_id, session_id)
    return session


def session_missing(project_id: str, session_id: str) -> ApplicationError:
    return ApplicationError(
        f"chat session {session_id!r} not found in project {project_id!r}", status=404
    )


def sessions_at_level(sessions: QuerySet[ChatSession], level: str, now: datetime) -> QuerySet:
    """The sessions at an activity level by their last activity (`chat.models.activity_level`:
    the bands end at each session's threshold when it is shorter): range conditions on the
    indexed last_activity_at, narrowed by the threshold."""
    threshold = ExpressionWrapper(
        Coalesce("idle_timeout_minutes", Value(settings.CLEANUP_THRESHOLD_MINUTES))
        * Value(timedelta(minutes=1)),
        output_field=DurationField(),
    )
    past_threshold = Q(
        last_activity_at__lt=ExpressionWrapper(Value(now) - threshold, output_field=DateTimeField())
    )
    if level == ActivityLevel.ACTIVE:
        return sessions.filter(last_activity_at__gte=now - ACTIVE_WITHIN).exclude(past_threshold)
    if level == ActivityLevel.IDLE:
        return sessions.filter(
            last_activity_at__lt=now - ACTIVE_WITHIN, last_activity_at__gte=now - IDLE_WITHIN
        ).exclude(past_threshold)
    if level == ActivityLevel.BACKGROUND:
        return sessions.filter(Q(last_activity_at__lt=now - IDLE_WITHIN) | past_threshold)
    return sessions


def message_list(*, session: ChatSession) -> QuerySet[ChatMessage]:
    return ChatMessage.objects.filter(session=session).order_by("created_at", "id")


def session_find(spec: str, *, owner: str | None = None) -> ChatSession:
    """Any user's session named "PROJECT/SESSION", for operators; `owner` (a username)
    picks one when several users have these ids."""
    project_id, _, session_id = spec.partition("/")
    if not project_id or not session_id:
        raise ApplicationError(f"session {spec!r}: expected PROJECT/SESSION")
    matches = ChatSession.objects.filter(project_id=project_id, session_id=session_id)
    if owner:
        matches = matches.filter(owner__username=owner)
    found = list(matches[:2])
    if not found:
        raise ApplicationError(
            f"no chat session {spec}" + (f" of {owner}" if owner else ""), status=404
        )
    if len(found) > 1:
        raise ApplicationError(f"several users have a session {spec}; name its owner as well")
    return found[0]
