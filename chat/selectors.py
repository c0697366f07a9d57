"""Reads of chat sessions and messages, always scoped to their owner."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from chat.models import ChatMessage, ChatSession
from kosuke.errors import ApplicationError
from kosuke.memo import TimedMemo


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
        raise _session_missing(project_id, session_id)
    return session


def _session_missing(project_id: str, session_id: str) -> ApplicationError:
    return ApplicationError(
        f"chat session {session_id!r} not found in project {project_id!r}", status=404
    )


# (owner pk, project id, session id) -> session pk, for the heartbeat: a session deleted
# in this process is forgotten at once (chat.apps), elsewhere after
# API_TOKEN_CACHE_SECONDS (a late heartbeat writes only expiring presence).
_session_pks: TimedMemo[int] = TimedMemo(lambda: settings.API_TOKEN_CACHE_SECONDS)


async def session_pk_get_async(*, owner: AbstractBaseUser, project_id: str, session_id: str) -> int:
    """The pk of the owner's session (404 like `session_get`), remembered for a while."""
    key = (owner.pk, project_id, session_id)
    known = _session_pks.get(key)
    if known is not None:
        return known
    pk = await (
        ChatSession.objects.filter(owner=owner, project_id=project_id, session_id=session_id)
        .values_list("pk", flat=True)
        .afirst()
    )
    if pk is None:
        raise _session_missing(project_id, session_id)
    return _session_pks.put(key, pk)


def session_pks_forget(session_pk: int | None = None) -> None:
    """Forget one session's pk, or every one, in this process."""
    _session_pks.forget(None if session_pk is None else lambda _, pk: pk == session_pk)


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
