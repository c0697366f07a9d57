"""The preview API of a chat session: open (or restart), inspect, stop.

The work happens on a worker (previews.tasks): only workers reach the Docker engine.
"""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.

from django.http import HttpRequest
from ninja import Router

from chat.schemas import PathId
from chat.selectors import session_get
from previews.remote import preview_ask
from previews.schemas import PreviewOut
from previews.services import PreviewAction

router = Router(tags=["previews"])

PREVIEW = "/{project_id}/chat-sessions/{session_id}/preview"


def _ask(request: HttpRequest, project_id: str, session_id: str, action: PreviewAction) -> dict:
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    return preview_ask(session=session, action=action, actor=str(request.auth))


@router.post(PREVIEW, response=PreviewOut)
def open_(request: HttpRequest, project_id: PathId, session_id: PathId):
    """Start the preview (create it, or start its stopped containers again)."""
    return _ask(request, project_id, session_id, PreviewAction.OPEN)


@router.get(PREVIEW, response=PreviewOut)
def status(request: HttpRequest, project_id: PathId, session_id: PathId):
    """The preview's state and containers, as the engine shows them now, and when it
    stops if nothing happens (`stops_at`)."""
    return _ask(request, project_id, session_id, PreviewAction.STATUS)


@router.delete(PREVIEW, response=PreviewOut)
def stop(request: HttpRequest, project_id: PathId, session_id: PathId):
    """Stop the preview now, containers labelled kosuke.keep=true included."""
    return _ask(request, project_id, session_id, PreviewAction.STOP)
