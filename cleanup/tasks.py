"""Celery tasks of the cleanup pipeline: thin adapters over cleanup.sweep and cleanup.stops.

Task names are stable: queued messages refer to them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from cleanup.handout import ENDED, QUEUED, handout_clear, handout_mark
from cleanup.history import history_prune
from cleanup.models import CleanupRun, StopDecision
from cleanup.stops import decision_execute, decision_settle, stop_inline
from cleanup.sweep import SWEEP_TIME_LIMIT, run_sweep
from kosuke.celery import engines_served_here
from previews.engine import EngineError, PermanentEngineError
from previews.engines import default_engine_name
from previews.models import Preview
from previews.reach import EnginesThroughWorkers

logger = logging.getLogger(__name__)


class StopPreviewTask(Task):
    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: dict, einfo: Any) -> None:
        # Retries exhausted, a permanent error, or a time limit: the decision failed.
        decision_id = kwargs["decision_id"]
        try:
            decision = StopDecision.objects.filter(pk=decision_id).first()
            if decision is not None:
                detail = f"{type(exc).__name__}: {exc}"
                decision_settle(decision, StopDecision.Outcome.FAILED, detail)
        except (OperationalError, InterfaceError) as db_error:
            # Nothing can record it now: say that nothing carries it out any more, so the
            # first sweep after the database is back hands it out again (cleanup.handout).
            logger.error("stop decision %s: failure not recorded: %s", decision_id, db_error)
            handout_mark(decision_id, ENDED)


def stop_enqueue(decision: StopDecision, *, take_over: bool = False) -> None:
    """Hand one stop decision to the workers (the sweep's dispatch), then mark it queued.

    In that order: a sweep that dies in between leaves no mark, and the next sweep hands
    the stop out again, where a `queued` mark with no message would be waited for until
    the lost-stop cutoff. A task that gives up at once keeps its `ended` mark.
    """
    if take_over:
        handout_clear(decision.pk)  # the `ended` mark of the task this one takes over from
    stop_preview.apply_async(
        kwargs={
            "decision_id": decision.pk,
            "session": f"{decision.project_id}/{decision.session_id}",
            "take_over": take_over,
            "engine": _engine_of(decision),
        }
    )
    # Published: a mark that cannot be written now is a missing one, which is safe (the
    # next sweep hands the stop out again; a second copy does nothing).
    with contextlib.suppress(redis.RedisError):
        handout_mark(decision.pk, QUEUED, unless_marked=True)


def _engine_of(decision: StopDecision) -> str:
    """The engine whose workers carry the stop out: its preview's (as the sweep read it)."""
    engine = getattr(decision, "preview_engine", None)
    if engine is None:
        previews = Preview.objects.filter(session_id=decision.chat_session_id)
        engine = previews.values_list("engine", flat=True).first()
    return engine or default_engine_name()


@shared_task(
    bind=True,
    name="cleanup.sweep",
    soft_time_limit=SWEEP_TIME_LIMIT - 30,
    time_limit=SWEEP_TIME_LIMIT,
)
def sweep_task(
    self: Task,
    trigger: str = CleanupRun.Trigger.BEAT,
    threshold_minutes: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    session_pks: list[int] | None = None,
    run_id: int | None = None,
) -> dict:
    """A scheduled sweep (beat), or the run `run_id` an operator or the cron endpoint
    asked for: that one waits for a sweep that holds the lock instead of being dropped."""
    if run_id is None:
        run = CleanupRun.new(
            trigger=trigger,
            threshold_minutes=threshold_minutes,
            batch_size=batch_size,
            dry_run=dry_run,
        )
    else:
        run = CleanupRun.objects.filter(pk=run_id).first()
        if run is None:
            return {"skipped": f"run {run_id} no longer exists"}
    swept = run_sweep(
        run,
        dispatch=stop_enqueue,
        session_pks=set(session_pks) if session_pks is not None else None,
        reach=EnginesThroughWorkers(served_here=engines_served_here()),
    )
    if swept is not None:
        return swept.summary()
    if run_id is not None:
        raise self.retry(countdown=1, max_retries=SWEEP_TIME_LIMIT)
    return {"skipped": "another sweep is running"}


def run_start(run: CleanupRun, session_pks: list[int] | None) -> None:
    """Start a run someone asked for: on the workers, or in this process when the
    deployment runs none (WORKER_ENABLED=false)."""
    if settings.WORKER_ENABLED:
        sweep_task.apply_async(
            kwargs={"run_id": run.pk, "session_pks": session_pks},
            # Not run after the next sweep has closed it as never started.
            expires=SWEEP_TIME_LIMIT,
        )
    else:
        swept = run_sweep(
            run,
            dispatch=stop_inline,
            session_pks=set(session_pks) if session_pks is not None else None,
            concurrency=4,
        )
        if swept is None:  # nobody would retry it here: close it, saying why
            CleanupRun.objects.filter(pk=run.pk).update(
                swept_at=timezone.now(), note="another sweep was running; nothing done"
            )


@shared_task(
    bind=True,
    base=StopPreviewTask,
    name="cleanup.stop_preview",
    autoretry_for=(EngineError, OperationalError, InterfaceError, redis.ConnectionError),
    dont_autoretry_for=(PermanentEngineError,),
    retry_backoff=1,
    retry_backoff_max=settings.STOP_RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    max_retries=3,
    soft_time_limit=settings.STOP_TASK_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.STOP_TASK_TIME_LIMIT_SECONDS,
)
def stop_preview(
    self: Task, decision_id: int, session: str = "", take_over: bool = False, engine: str = ""
) -> str:
    """Stop one preview as decided, on the workers of its `engine` (which only routes it);
    `session` only labels the task for people and Sentry.

    A redelivery (its worker died) or a retry may take over the claim its earlier run left.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    take_over = take_over or redelivered or self.request.retries > 0
    return decision_execute(decision_id=decision_id, take_over=take_over)


@shared_task(name="cleanup.prune_history", soft_time_limit=120, time_limit=150)
def prune_history_task() -> dict:
    return history_prune()
