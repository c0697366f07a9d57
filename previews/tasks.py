"""The work an engine's workers do for others: people's preview requests (previews.remote
waits for them), and the sweep's list calls and removals (previews.reach waits for them).
Each is called with `engine=<name>` and so runs on that engine's workers.

Replies are plain JSON: errors travel as data (with the HTTP status they answer with).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from chat.models import ChatSession
from kosuke.errors import ApplicationError
from previews.engine import EngineError, deployment_labels
from previews.engine import engine as engine_named
from previews.reach import Removal, removal_carry_out
from previews.schemas import PreviewOut
from previews.services import PreviewAction, preview_act


@shared_task(name="previews.request", soft_time_limit=120, time_limit=150, acks_late=False)
def preview_request_task(
    session_pk: int, action: str, actor: str = "", engine: str = ""
) -> dict[str, Any]:
    # acks_late off: a person's request that died with its worker is not replayed later.
    # Runs on the workers of `engine` (kosuke.celery.route_to_engine).
    session = ChatSession.objects.filter(pk=session_pk).first()
    if session is None:
        return {"error": "the chat session no longer exists", "status": 404}
    try:
        status = preview_act(
            session=session, action=PreviewAction(action), actor=actor, engine=engine or None
        )
    except EngineError as exc:
        # The one place an engine failure becomes an HTTP answer: refused, or unreachable.
        return {"error": str(exc), "status": 502 if exc.permanent else 503}
    except ApplicationError as exc:
        return {"error": exc.message, "status": exc.status}
    return {"preview": PreviewOut.from_status(status).model_dump(mode="json")}


@shared_task(name="previews.list", soft_time_limit=120, time_limit=150, acks_late=False)
def engine_list_task(engine: str) -> dict[str, Any]:
    """Every preview container of this deployment on the engine (the sweep's list call)."""
    try:
        listed = engine_named(engine).containers(deployment_labels())
    except EngineError as exc:
        return {"error": str(exc)}
    return {"containers": [container.as_json() for container in listed]}


@shared_task(name="previews.remove", soft_time_limit=120, time_limit=150, acks_late=False)
def containers_remove_task(engine: str, **removal: Any) -> dict[str, Any]:
    """Remove containers from the engine (a sweep's removal: previews.reach.Removal)."""
    try:
        return {"outcome": removal_carry_out(Removal.from_task_kwargs(engine=engine, **removal))}
    except EngineError as exc:
        return {"error": str(exc)}
