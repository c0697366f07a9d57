"""The sweep: one pass over the live previews that decides, and hands out, the stops.

1. Settle the stops handed out so long ago that their message was lost.
2. Read the previews that are not stopped (the partial index `preview_live`) and the
   sessions with a stop under way (the partial index `stop_decision_pending`).
3. List each engine once; tell the health reports what each engine showed.
4. Reconcile: write the preview rows that disagree with the listing, and only those.
5. Decide for each preview with no stop under way (presence in one Redis round trip).
6. Record the longest-idle `batch_size` stops as pending decisions (a dry run records
   them as such); the others are counted as deferred and decided again next time.
7. Remove the containers no session owns, each recorded as a decision.
8. Save the run, then hand out the pending stops.

Cost follows the previews that are not stopped, never the history: a constant number of
queries, one list call per engine, one Redis round trip for presence. Only `sweep`
writes the run; the steps return values. A Redis lock makes a second concurrent sweep a
no-op, however many beats or workers run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from chat.models import ActivityLevel, ChatSession
from chat.presence import sessions_last_seen
from cleanup.decisions import Decision, Policy, Snapshot, decide
from cleanup.models import CleanupRun, StopDecision
from cleanup.progress import progress_publish
from cleanup.stops import decision_settle, decisions_settle_lost
from kosuke.health import engine_reports_record
from kosuke.redis_client import redis_client
from previews.engine import Container, EngineError, engine
from previews.models import Preview, PreviewState, StopReason
from previews.reconcile import (
    EngineListing,
    engines_list,
    orphan_remove,
    orphans_find,
    previews_reconcile,
)

logger = logging.getLogger(__name__)

LOCK_KEY = "cleanup:sweep-lock"
# Longer than any sweep may run (its hard time limit), so a crashed sweep frees the lock.
LOCK_TIMEOUT_SECONDS = 360

Dispatch = Callable[[StopDecision], None]

_PREVIEW_FIELDS = ("session", "state", "state_changed_at", "engine", "started_at", "claim_token")
_SESSION_FIELDS = (
    "project_id",
    "session_id",
    "last_activity_at",
    "idle_timeout_minutes",
    "busy_until",
)


@dataclass
class _Verdicts:
    """What step 5 concluded: the stops due, longest idle first, and what it could not do."""

    to_stop: list[tuple[Preview, Decision, list[Container]]] = field(default_factory=list)
    undecided: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


def _previews_live(session: ChatSession | None) -> list[Preview]:
    # Only what reconciling and deciding read: thousands of rows are built per sweep.
    previews = (
        Preview.objects.exclude(state=PreviewState.STOPPED)
        .select_related("session")
        .only(*_PREVIEW_FIELDS, *(f"session__{name}" for name in _SESSION_FIELDS))
    )
    if session is not None:
        previews = previews.filter(session=session)
    return list(previews)


def _sessions_with_stop_under_way() -> set[int]:
    pending = StopDecision.objects.filter(outcome=StopDecision.Outcome.PENDING)
    return set(pending.values_list("chat_session_id", flat=True))


def _decide_each(
    previews: list[Preview],
    listing: EngineListing,
    under_way: set[int],
    now: datetime,
    policy: Policy,
) -> _Verdicts:
    """Decide for every preview with no stop under way; one bad row never stops the rest."""
    verdicts = _Verdicts()
    to_decide = [preview for preview in previews if preview.session_id not in under_way]
    last_seen = sessions_last_seen(preview.session_id for preview in to_decide)
    for preview in to_decide:
        running = [c for c in listing.containers_of(preview) if c.is_running]
        try:
            kept = bool(running) and all(container.is_kept for container in running)
            snapshot = Snapshot.of(preview, last_seen_at=last_seen[preview.session_id], kept=kept)
            decision = decide(snapshot, now, policy)
        except Exception as exc:
            logger.exception("sweep: cannot decide for %s", preview.session)
            error = f"{type(exc).__name__}: {exc}"
            verdicts.errors.append({"session": str(preview.session), "error": error})
            verdicts.undecided += 1
            continue
        if decision.stop:
            verdicts.to_stop.append((preview, decision, running))
    # Longest idle first: when the batch is full, the freshest sessions wait.
    verdicts.to_stop.sort(key=lambda verdict: verdict[0].session.last_activity_at)
    return verdicts


def _stop_decisions(
    run: CleanupRun, to_stop: list[tuple[Preview, Decision, list[Container]]], now: datetime
) -> list[StopDecision]:
    """The decisions to record for the stops carried out now (or, in a dry run, not)."""
    outcome = StopDecision.Outcome.DRY_RUN if run.dry_run else StopDecision.Outcome.PENDING
    return [
        StopDecision(
            run=run,
            chat_session=preview.session,
            project_id=preview.session.project_id,
            session_id=preview.session.session_id,
            stop_reason=decision.stop_reason,
            reason=decision.reason,
            level=decision.level,
            containers=[{"id": c.id, "kept": c.is_kept} for c in running],
            decided_at=now,
            outcome=outcome,
            outcome_detail="dry run: nothing stopped" if run.dry_run else "",
            settled_at=now if run.dry_run else None,
        )
        for preview, decision, running in to_stop
    ]


def _orphans_remove(run: CleanupRun, orphans: list[Container], now: datetime) -> list[StopDecision]:
    """Remove the containers no session owns (not in a dry run); returns their decisions."""
    decisions = []
    for container in orphans:
        outcome, detail = StopDecision.Outcome.DRY_RUN, "dry run: kept"
        if not run.dry_run:
            try:
                orphan_remove(container)
                outcome, detail = StopDecision.Outcome.STOPPED, "removed"
            except EngineError as exc:
                outcome, detail = StopDecision.Outcome.FAILED, str(exc)
        decisions.append(
            StopDecision(
                run=run,
                project_id=container.project_id[:64],
                session_id=container.session_id[:64],
                stop_reason=StopReason.ORPHAN,
                reason=f"container {container.name} belongs to no session",
                level=ActivityLevel.DISCONNECTED,
                containers=[{"id": container.id, "kept": False}],
                decided_at=now,
                outcome=outcome,
                outcome_detail=detail,
                settled_at=now,
            )
        )
    return decisions


def sweep(
    *,
    trigger: str,
    dispatch: Dispatch,
    threshold_minutes: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    session: ChatSession | None = None,
    now: datetime | None = None,
) -> CleanupRun | None:
    """Decide for every live preview (or one `session`'s) and hand each stop to `dispatch`.

    Returns the recorded run, or None when another sweep holds the lock.
    """
    lock = redis_client().lock(LOCK_KEY, timeout=LOCK_TIMEOUT_SECONDS)
    if not lock.acquire(blocking=False):
        logger.info("sweep: another sweep is running; nothing to do")
        return None
    try:
        policy = Policy.from_settings(threshold_minutes=threshold_minutes)
        run = CleanupRun.objects.create(
            trigger=trigger,
            threshold_minutes=int(policy.threshold.total_seconds() // 60),
            dry_run=dry_run,
            batch_size=batch_size or settings.CLEANUP_BATCH_SIZE,
            started_at=now or timezone.now(),
        )
        pending = _sweep(run, policy, session)
    finally:
        if lock.owned():
            lock.release()
    _hand_out(run, pending, dispatch)
    return CleanupRun.objects.get(pk=run.pk)


def _sweep(run: CleanupRun, policy: Policy, session: ChatSession | None) -> list[StopDecision]:
    """Steps 1-8 but the handing out; returns the pending decisions."""
    clock, now = time.monotonic(), run.started_at
    progress_publish(run, "started")
    lost = decisions_settle_lost(now)
    if lost:
        logger.warning("sweep: %s stop(s) were lost and are decided again", lost)
    previews = _previews_live(session)
    under_way = _sessions_with_stop_under_way()
    listing = engines_list({preview.engine for preview in previews} | {engine().url})
    engine_reports_record(reached=listing.reached, unreachable=listing.unreachable)
    reachable = [preview for preview in previews if preview.engine not in listing.unreachable]
    previews_reconcile(reachable, listing, now=now)
    verdicts = _decide_each(reachable, listing, under_way, now, policy)
    verdicts.undecided += len(previews) - len(reachable)

    due_now = verdicts.to_stop[: run.batch_size]
    decisions = _stop_decisions(run, due_now, now)
    if session is None:
        known = {preview.session_id for preview in previews}
        decisions += _orphans_remove(run, orphans_find(listing, known=known), now)
    StopDecision.objects.bulk_create(decisions)

    run.examined = len(previews)
    run.deferred = len(verdicts.to_stop) - len(due_now)
    run.undecided = verdicts.undecided
    run.sweep_errors = [
        *({"engine": url, "error": error} for url, error in listing.unreachable.items()),
        *verdicts.errors,
    ]
    run.engine_list_calls = listing.list_calls
    run.swept_at = timezone.now()
    run.duration_ms = int((time.monotonic() - clock) * 1000)
    run.save()
    logger.info(
        "sweep %s: %s examined, %s to stop now, %s deferred, %s undecided, %s list call(s)",
        run.pk,
        run.examined,
        len(due_now),
        run.deferred,
        run.undecided,
        run.engine_list_calls,
        extra={"run": run.pk},
    )
    progress_publish(run, "swept")
    return [d for d in decisions if d.outcome == StopDecision.Outcome.PENDING]


def _hand_out(run: CleanupRun, pending: list[StopDecision], dispatch: Dispatch) -> None:
    """Give each pending stop to `dispatch`; one that cannot be handed out fails alone."""
    for decision in pending:
        try:
            dispatch(decision)
        except Exception as exc:
            logger.exception(
                "sweep: stop of %s/%s failed", decision.project_id, decision.session_id
            )
            decision_settle(decision, StopDecision.Outcome.FAILED, f"{type(exc).__name__}: {exc}")
    if not pending:
        progress_publish(run, "finished")
