"""Preview work for people (API, admin), carried out by a worker.

Only the worker reaches the Docker engine (in compose it alone mounts the socket), so the
web process asks for an action with a task and waits for the reply, bounded by
PREVIEW_REQUEST_TIMEOUT_SECONDS. Replies are plain JSON: errors travel as data.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import TimeoutError as ReplyTimeout
from django.conf import settings

from chat.models import ChatSession
from kosuke.errors import ApplicationError
from previews.engine import EngineError
from previews.schemas import PreviewOut
from previews.services import preview_request


@shared_task(name="previews.request", soft_time_limit=120, time_limit=150, acks_late=False)
def preview_request_task(session_pk: int, action: str, actor: str = "") -> dict[str, Any]:
    # acks_late off: a person's request that died with its worker is not replayed later.
    session = ChatSession.objects.filter(pk=session_pk).first()
    if session is None:
        return {"error": "the chat session no longer exists", "status": 404}
    try:
        status = preview_request(session=session, action=action, actor=actor)
    except ApplicationError as exc:
        return {"error": exc.message, "status": exc.status}
    except EngineError as exc:
        return {"error": str(exc), "status": 502 if exc.permanent else 503}
    return {"preview": PreviewOut.from_status(status).model_dump(mode="json")}


def _reply(task: Any, timeout: float, **kwargs: Any) -> dict[str, Any]:
    result = task.apply_async(kwargs=kwargs, expires=timeout)
    try:
        return result.get(timeout=timeout)
    except ReplyTimeout:
        raise ApplicationError(
            f"no worker answered within {timeout:.0f} s; previews need a running worker "
            "(celery -A kosuke worker -Q sweeps,stops,previews)",
            status=503,
        ) from None
    finally:
        result.forget()


def preview_request_remote(*, session: ChatSession, action: str, actor: str = "") -> dict:
    """Ask a worker to open / inspect / stop the preview; returns the preview as JSON."""
    reply = _reply(
        preview_request_task,
        settings.PREVIEW_REQUEST_TIMEOUT_SECONDS,
        session_pk=session.pk,
        action=action,
        actor=actor,
    )
    if "error" in reply:
        raise ApplicationError(reply["error"], status=reply["status"])
    return reply["preview"]
