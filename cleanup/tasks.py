"""Celery tasks of the cleanup pipeline: thin adapters over cleanup.sweep and cleanup.stops.

Task names are stable: queued messages refer to them.
"""

from __future__ import annotations

import random
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
from previews.engine import EngineError

# Retries wait 1, 2, 4 s (with jitter), far below the Redis visibility timeout.
STOP_RETRY_BACKOFF_MAX_SECONDS = 60


class StopFailedForGood(Exception):
    """The engine refused the stop in a way no retry can fix."""


class StopPreviewTask(Task):
    def retry(self, *args: Any, countdown: float | None = None, **kwargs: Any) -> Any:
        # "Equal jitter": the delay stays in [d/2, d], so retries spread out across
        # workers and still wait longer each time (Celery's own jitter may wait 0 s).
        if countdown:
            countdown = countdown / 2 + random.uniform(0, countdown / 2)  # noqa: S311
        return super().retry(*args, countdown=countdown, **kwargs)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: dict, einfo: Any) -> None:
        # Retries exhausted, a permanent error, or a time limit: the decision failed.
        decision_settle(
            kwargs["decision_id"], StopDecision.Outcome.FAILED, f"{type(exc).__name__}: {exc}"
        )


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
    bind=True,
    base=StopPreviewTask,
    name="cleanup.stop_preview",
    autoretry_for=(EngineError, OperationalError, InterfaceError, redis.ConnectionError),
    retry_backoff=1,
    retry_backoff_max=STOP_RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=False,  # StopPreviewTask.retry adds its own
    max_retries=3,
    soft_time_limit=settings.DOCKER_TIMEOUT_SECONDS + settings.PREVIEW_STOP_TIMEOUT_SECONDS + 60,
    time_limit=settings.DOCKER_TIMEOUT_SECONDS + settings.PREVIEW_STOP_TIMEOUT_SECONDS + 90,
)
def stop_preview(self: Task, decision_id: int, session: str = "") -> str:
    """Stop one preview as decided; `session` only labels the task for people and Sentry."""
    try:
        return decision_execute(decision_id=decision_id)
    except EngineError as exc:
        if exc.permanent:
            raise StopFailedForGood(str(exc)) from exc
        raise


@shared_task(name="cleanup.prune_history", soft_time_limit=120, time_limit=150)
def prune_history_task() -> dict:
    return history_prune()
