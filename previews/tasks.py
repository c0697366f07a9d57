"""The worker's side of preview work for people (API, admin); previews.remote waits for it.

Replies are plain JSON: errors travel as data, with the HTTP status they answer with.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from chat.models import ChatSession
from kosuke.errors import ApplicationError
from previews.engine import EngineError
from previews.schemas import PreviewOut
from previews.services import PreviewAction, preview_act


@shared_task(name="previews.request", soft_time_limit=120, time_limit=150, acks_late=False)
def preview_request_task(session_pk: int, action: str, actor: str = "") -> dict[str, Any]:
    # acks_late off: a person's request that died with its worker is not replayed later.
    session = ChatSession.objects.filter(pk=session_pk).first()
    if session is None:
        return {"error": "the chat session no longer exists", "status": 404}
    try:
        status = preview_act(session=session, action=PreviewAction(action), actor=actor)
    except EngineError as exc:
        # The one place an engine failure becomes an HTTP answer: refused, or unreachable.
        return {"error": str(exc), "status": 502 if exc.permanent else 503}
    except ApplicationError as exc:
        return {"error": exc.message, "status": exc.status}
    return {"preview": PreviewOut.from_status(status).model_dump(mode="json")}
