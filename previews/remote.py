"""The web side of preview work: ask a worker and wait for its reply.

Only workers reach the Docker engine (in compose they alone mount the socket), so the web
process hands an action to `previews.request` and waits, bounded by
PREVIEW_REQUEST_TIMEOUT_SECONDS.
"""

from __future__ import annotations

from celery.exceptions import TimeoutError as ReplyTimeout
from django.conf import settings

from chat.models import ChatSession
from kosuke.database import connection_give_back
from kosuke.errors import ApplicationError
from previews.services import PreviewAction
from previews.tasks import preview_request_task


def preview_ask(*, session: ChatSession, action: PreviewAction, actor: str = "") -> dict:
    """Have a worker open / inspect / stop the preview; returns the preview as JSON.

    Raises ApplicationError with the worker's answer, or 503 when no worker answers.
    """
    timeout = settings.PREVIEW_REQUEST_TIMEOUT_SECONDS
    result = preview_request_task.apply_async(
        kwargs={"session_pk": session.pk, "action": action.value, "actor": actor},
        expires=timeout,
    )
    connection_give_back()
    try:
        reply = result.get(timeout=timeout)
    except ReplyTimeout:
        raise ApplicationError(
            f"no worker answered within {timeout:.0f} s; previews need a running worker "
            "(celery -A kosuke worker)",
            status=503,
        ) from None
    finally:
        result.forget()
    if "error" in reply:
        raise ApplicationError(reply["error"], status=reply["status"])
    return reply["preview"]
