"""The preview API of a chat session: open (or restart), inspect, stop."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime
# (through decorators such as @paginate, whose module cannot resolve our names).

from django.http import HttpRequest
from ninja import Router

from chat.schemas import PathId
from chat.selectors import session_get
from kosuke.errors import ApplicationError
from previews.models import StopReason
from previews.schemas import PreviewOut
from previews.services import StopOutcome, preview_open, preview_status, preview_stop

router = Router(tags=["previews"])

PREVIEW = "/{project_id}/chat-sessions/{session_id}/preview"


@router.post(PREVIEW, response=PreviewOut)
def open_(request: HttpRequest, project_id: PathId, session_id: PathId):
    """Start the preview (create it, or start its stopped containers again)."""
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    preview_open(session=session)
    return PreviewOut.from_status(preview_status(session=session))


@router.get(PREVIEW, response=PreviewOut)
def status(request: HttpRequest, project_id: PathId, session_id: PathId):
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    return PreviewOut.from_status(preview_status(session=session))


@router.delete(PREVIEW, response=PreviewOut)
def stop(request: HttpRequest, project_id: PathId, session_id: PathId):
    """Stop the preview now, containers labelled kosuke.keep=true included."""
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    detail = f"stopped by {request.auth}"
    if preview_stop(session=session, reason=StopReason.MANUAL, detail=detail) == StopOutcome.BUSY:
        raise ApplicationError(
            "the preview is starting right now; stop it again in a moment", status=409
        )
    return PreviewOut.from_status(preview_status(session=session))
