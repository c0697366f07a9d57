"""The web side of preview work: ask a worker and wait for its reply.

Only an engine's workers reach it (in compose they alone mount its socket), so the web
process hands an action to `previews.request` on the queue of the preview's engine
(previews.placement) and waits, bounded by PREVIEW_REQUEST_TIMEOUT_SECONDS. A preview
whose containers no engine holds is answered here: there is nothing to ask.
"""

from __future__ import annotations

from celery.exceptions import TimeoutError as ReplyTimeout
from django.conf import settings

from chat.models import ChatSession
from kosuke.database import connection_give_back
from kosuke.errors import ApplicationError
from previews.placement import preview_engine
from previews.schemas import PreviewOut
from previews.services import PreviewAction, PreviewStatus, preview_row
from previews.tasks import preview_request_task


def preview_ask(*, session: ChatSession, action: PreviewAction, actor: str = "") -> dict:
    """Have a worker open / inspect / stop the preview; returns the preview as JSON.

    Raises ApplicationError with the worker's answer, or 503 when no worker answers.
    """
    engine = preview_engine(session, placing=action == PreviewAction.OPEN)
    if not engine:  # no containers anywhere: stopped, whatever was asked
        status = PreviewStatus(preview_row(session, engine=""), containers=[])
        return PreviewOut.from_status(status).model_dump(mode="json")
    timeout = settings.PREVIEW_REQUEST_TIMEOUT_SECONDS
    result = preview_request_task.apply_async(
        kwargs={"session_pk": session.pk, "action": action.value, "actor": actor, "engine": engine},
        expires=timeout,
    )
    connection_give_back()
    try:
        reply = result.get(timeout=timeout)
    except ReplyTimeout:
        raise ApplicationError(
            f"no worker of engine {engine} answered within {timeout:.0f} s; its previews "
            f"need a running worker (celery -A kosuke worker -Q engine.{engine})",
            status=503,
        ) from None
    finally:
        result.forget()
    if "error" in reply:
        raise ApplicationError(reply["error"], status=reply["status"])
    return reply["preview"]
