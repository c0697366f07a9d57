"""The preview API of a chat session: open (or restart), inspect, stop."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from chat.selectors import session_get
from previews.models import StopReason
from previews.schemas import PreviewOut
from previews.services import preview_open, preview_status, preview_stop

router = Router(tags=["previews"])

PREVIEW = "/{project_id}/chat-sessions/{session_id}/preview"


@router.post(PREVIEW, response=PreviewOut)
def open_(request: HttpRequest, project_id: str, session_id: str):
    """Start the preview (create it, or start its stopped containers again)."""
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    preview_open(session=session)
    return PreviewOut.from_status(preview_status(session=session))


@router.get(PREVIEW, response=PreviewOut)
def status(request: HttpRequest, project_id: str, session_id: str):
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    return PreviewOut.from_status(preview_status(session=session))


@router.delete(PREVIEW, response=PreviewOut)
def stop(request: HttpRequest, project_id: str, session_id: str):
    session = session_get(owner=request.auth, project_id=project_id, session_id=session_id)
    preview_stop(session=session, reason=StopReason.MANUAL, detail=f"stopped by {request.auth}")
    return PreviewOut.from_status(preview_status(session=session))
