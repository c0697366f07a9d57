"""Celery tasks of the cleanup pipeline: thin adapters over cleanup.sweep and cleanup.stops.

Task names are stable: queued messages refer to them.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from chat.models import ChatSession
from cleanup.history import history_prune
from cleanup.models import CleanupRun, StopDecision
from cleanup.stops import decision_execute, decision_settle
from cleanup.sweep import sweep
from previews.engine import EngineError, PermanentEngineError

# Retries wait up to 1, 2, 4 s (Celery's full jitter), far below the visibility timeout.
STOP_RETRY_BACKOFF_MAX_SECONDS = 60


class StopPreviewTask(Task):
    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: dict, einfo: Any) -> None:
        # Retries exhausted, a permanent error, or a time limit: the decision failed.
        decision = StopDecision.objects.filter(pk=kwargs["decision_id"]).first()
        if decision is not None:
            decision_settle(decision, StopDecision.Outcome.FAILED, f"{type(exc).__name__}: {exc}")


def stop_enqueue(decision: StopDecision) -> None:
    """Hand one stop decision to the workers (the sweep's dispatch)."""
    stop_preview.apply_async(
        kwargs={
            "decision_id": decision.pk,
            "session": f"{decision.project_id}/{decision.session_id}",
        }
    )


@shared_task(
    name="cleanup.sweep",
    soft_time_limit=300,
    time_limit=330,
)
def sweep_task(
    trigger: str = CleanupRun.Trigger.BEAT,
    threshold_minutes: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    session_pk: int | None = None,
) -> dict:
    session = ChatSession.objects.filter(pk=session_pk).first() if session_pk else None
    if session_pk and session is None:
        return {"skipped": f"session {session_pk} no longer exists"}
    run = sweep(
        trigger=trigger,
        dispatch=stop_enqueue,
        threshold_minutes=threshold_minutes,
        batch_size=batch_size,
        dry_run=dry_run,
        session=session,
    )
    return run.summary() if run else {"skipped": "another sweep is running"}


@shared_task(
    base=StopPreviewTask,
    name="cleanup.stop_preview",
    autoretry_for=(EngineError, OperationalError, InterfaceError, redis.ConnectionError),
    dont_autoretry_for=(PermanentEngineError,),
    retry_backoff=1,
    retry_backoff_max=STOP_RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    max_retries=3,
    soft_time_limit=settings.DOCKER_TIMEOUT_SECONDS + settings.PREVIEW_STOP_TIMEOUT_SECONDS + 60,
    time_limit=settings.DOCKER_TIMEOUT_SECONDS + settings.PREVIEW_STOP_TIMEOUT_SECONDS + 90,
)
def stop_preview(decision_id: int, session: str = "") -> str:
    """Stop one preview as decided; `session` only labels the task for people and Sentry."""
    return decision_execute(decision_id=decision_id)


@shared_task(name="cleanup.prune_history", soft_time_limit=120, time_limit=150)
def prune_history_task() -> dict:
    return history_prune()
