"""The chat JSON API: parse, call one service or selector, answer."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime
# (through decorators such as @paginate, whose module cannot resolve our names).

from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from chat import selectors, services
from chat.heartbeat import heartbeat_receive
from chat.models import ChatMessage, ChatSession
from chat.schemas import (
    HeartbeatIn,
    MessageIn,
    MessageOut,
    PathId,
    PresenceOut,
    SessionCreateIn,
    SessionOut,
    SessionUpdateIn,
)
from kosuke.auth import AsyncApiTokenAuth, BrowserSessionAuth
from kosuke.pagination import Pagination

router = Router(tags=["chat"])

SESSION = "/{project_id}/chat-sessions/{session_id}"


def _session(request: HttpRequest, project_id: str, session_id: str) -> ChatSession:
    return selectors.session_get(owner=request.auth, project_id=project_id, session_id=session_id)


@router.post("/{project_id}/chat-sessions", response={201: SessionOut})
def session_create(request: HttpRequest, project_id: PathId, body: SessionCreateIn):
    return Status(
        201, services.session_create(owner=request.auth, project_id=project_id, **body.dict())
    )


@router.get("/{project_id}/chat-sessions", response=list[SessionOut])
@paginate(Pagination)
def session_list(request: HttpRequest, project_id: PathId):
    return selectors.session_list(owner=request.auth, project_id=project_id)


@router.get(SESSION, response=SessionOut)
def session_get(request: HttpRequest, project_id: PathId, session_id: PathId):
    return _session(request, project_id, session_id)


@router.put(SESSION, response=SessionOut)
def session_update(
    request: HttpRequest, project_id: PathId, session_id: PathId, body: SessionUpdateIn
):
    session = _session(request, project_id, session_id)
    return services.session_update(session=session, data=body.dict(exclude_unset=True))


@router.delete(SESSION, response={204: None})
def session_delete(request: HttpRequest, project_id: PathId, session_id: PathId):
    services.session_delete(session=_session(request, project_id, session_id))
    return Status(204, None)


@router.post(SESSION, response={201: MessageOut})
def message_send(request: HttpRequest, project_id: PathId, session_id: PathId, body: MessageIn):
    message = services.message_send(
        owner=request.auth,
        project_id=project_id,
        session_id=session_id,
        content=body.content,
        role=body.role,
    )
    return Status(201, message)


@router.get(f"{SESSION}/messages", response=list[MessageOut])
@paginate(Pagination)
def message_list(request: HttpRequest, project_id: PathId, session_id: PathId) -> list[ChatMessage]:
    return selectors.message_list(session=_session(request, project_id, session_id))


@router.post(
    f"{SESSION}/heartbeat",
    response=PresenceOut,
    auth=[AsyncApiTokenAuth(), BrowserSessionAuth()],
)
async def heartbeat(
    request: HttpRequest, project_id: PathId, session_id: PathId, body: HeartbeatIn
):
    """The hottest route (every open preview panel, every ~30 s): async, and no database
    work once the session is known (chat.heartbeat). Answers when the preview stops if
    nothing happens."""
    seen, stops = await heartbeat_receive(
        owner=request.auth, project_id=project_id, session_id=session_id, client_id=body.client_id
    )
    return PresenceOut.of(seen, stops)
