"""The sweep: one pass over the live previews that decides, and hands out, the stops.

Cost follows the previews that are not stopped (one indexed query, one Docker list call
per engine, one Redis round trip for presence), never the history of stopped sessions.
A Redis lock makes a second concurrent sweep a no-op, however many beats or workers run.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from chat.models import ActivityLevel, ChatSession
from chat.presence import sessions_presence
from cleanup.decisions import Decision, Policy, Snapshot, decide
from cleanup.models import CleanupRun, StopDecision
from cleanup.progress import progress_publish
from cleanup.stops import decision_settle, run_finish_if_settled
from kosuke.health import engine_report
from kosuke.redis_client import redis_client
from previews.engine import (
    LABEL_PROJECT,
    LABEL_SESSION,
    LABEL_SESSION_PK,
    Container,
    EngineError,
    deployment_labels,
    engine,
)
from previews.models import Preview, PreviewState, StopReason
from previews.services import preview_reconcile

logger = logging.getLogger(__name__)

LOCK_KEY = "cleanup:sweep-lock"


def _pending_lost_after() -> timedelta:
    """A stop handed out this long ago and still pending was lost with its message: longer
    than a redelivery (the visibility timeout) plus all retries. Younger ones are under
    way, so the session is not handed out twice."""
    return timedelta(seconds=2 * settings.CELERY_VISIBILITY_TIMEOUT_SECONDS + 300)


# Longer than any sweep may run (its hard time limit), so a crashed sweep frees the lock.
LOCK_TIMEOUT_SECONDS = 360

Dispatch = Callable[[StopDecision], None]


def _containers_by_session(
    previews: list[Preview], run: CleanupRun
) -> tuple[dict[int, list[Container]], set[str]]:
    """One list call per engine; returns containers by session pk, and unreachable engines."""
    by_session: dict[int, list[Container]] = defaultdict(list)
    unreachable: set[str] = set()
    engine_urls = {preview.engine for preview in previews} | {engine().url}
    for engine_url in sorted(engine_urls):
        run.engine_list_calls += 1
        try:
            containers = engine(engine_url).containers(deployment_labels())
        except EngineError as exc:
            logger.error("sweep: engine %s: %s", engine_url, exc)
            run.errors.append({"engine": engine_url, "error": str(exc)})
            unreachable.add(engine_url)
            engine_report(engine_url, error=str(exc))
            continue
        engine_report(engine_url)
        for container in containers:
            session_pk = container.labels.get(LABEL_SESSION_PK, "")
            by_session[int(session_pk) if session_pk.isdigit() else 0].append(container)
    return by_session, unreachable


def _orphans(containers: dict[int, list[Container]]) -> list[Container]:
    """Containers of this deployment whose session is gone (deleted, or never known)."""
    live = set(ChatSession.objects.filter(pk__in=list(containers)).values_list("pk", flat=True))
    return [
        container
        for session_pk, session_containers in containers.items()
        if session_pk not in live
        for container in session_containers
        if not container.is_kept
    ]


def _stops_under_way(now: datetime) -> set[int]:
    """Sessions with a stop handed out and not settled; lost ones are settled as failed."""
    pending = StopDecision.objects.filter(outcome=StopDecision.Outcome.PENDING)
    lost_before = now - _pending_lost_after()
    for lost in pending.filter(decided_at__lt=lost_before).values_list("pk", flat=True):
        decision_settle(lost, StopDecision.Outcome.FAILED, "lost: never carried out")
    return set(pending.values_list("chat_session_id", flat=True))


def _decisions(
    previews: list[Preview],
    containers: dict[int, list[Container]],
    unreachable: set[str],
    run: CleanupRun,
    now: datetime,
    policy: Policy,
) -> list[tuple[Preview, Decision]]:
    """Reconcile each preview with its engine and decide; one bad row never stops the rest."""
    presence = sessions_presence([preview.session_id for preview in previews], now=now)
    under_way = _stops_under_way(now)
    to_stop = []
    for preview in previews:
        if preview.engine in unreachable:
            run.failed += 1  # could not be decided: the run must not look clean
            continue
        session = preview.session
        session_containers = containers.get(session.pk, [])
        try:
            # Even with a stop under way: a stop stuck for long (its task hit a time limit)
            # is settled here by what the engine shows.
            preview_reconcile(preview, session_containers, now=now)
            if session.pk in under_way:
                continue
            snapshot = Snapshot.of(preview, presence[session.pk], session_containers)
            decision = decide(snapshot, now, policy)
        except Exception as exc:
            logger.exception("sweep: cannot decide for %s", session)
            run.errors.append({"session": str(session), "error": f"{type(exc).__name__}: {exc}"})
            run.failed += 1
            continue
        logger.debug(
            "decision %s: %s (%s, %s)",
            session,
            "stop" if decision.stop else "keep",
            decision.reason,
            decision.level,
            extra={"session": str(session)},
        )
        if decision.stop:
            to_stop.append((preview, decision))
    # Longest idle first: when the batch is full, the freshest sessions wait.
    to_stop.sort(key=lambda pair: pair[0].session.last_activity_at)
    return to_stop


def _reap_orphans(orphans: list[Container], run: CleanupRun, now: datetime) -> None:
    """Remove the containers no session owns any more, each recorded as a decision."""
    Outcome = StopDecision.Outcome
    for container in orphans:
        decision = StopDecision(
            run=run,
            project_id=container.labels.get(LABEL_PROJECT, "")[:64],
            session_id=container.labels.get(LABEL_SESSION, "")[:64],
            stop_reason=StopReason.ORPHAN,
            reason=f"container {container.name} belongs to no session",
            level=ActivityLevel.DISCONNECTED,
            decided_at=now,
            settled_at=now,
        )
        run.found += 1
        if run.dry_run:
            decision.outcome, decision.outcome_detail = Outcome.DRY_RUN, "dry run: kept"
            run.skipped += 1
        else:
            try:
                engine(container.engine_url).remove(container.id)
                decision.outcome, decision.outcome_detail = Outcome.STOPPED, "removed"
                run.stopped += 1
            except EngineError as exc:
                decision.outcome, decision.outcome_detail = Outcome.FAILED, str(exc)
                run.failed += 1
                run.errors.append({"container": container.name, "error": str(exc)})
        decision.save()


def _record(
    run: CleanupRun, to_stop: list[tuple[Preview, Decision]], now: datetime
) -> list[StopDecision]:
    """Store every stop decision with its reason; returns the ones to carry out now."""
    Outcome = StopDecision.Outcome
    rows = []
    for index, (preview, decision) in enumerate(to_stop):
        if run.dry_run:
            outcome, detail = Outcome.DRY_RUN, "dry run: nothing stopped"
        elif index >= run.batch_size:
            outcome, detail = Outcome.DEFERRED, f"beyond the batch size of {run.batch_size}"
        else:
            outcome, detail = Outcome.PENDING, ""
        rows.append(
            StopDecision(
                run=run,
                chat_session=preview.session,
                project_id=preview.session.project_id,
                session_id=preview.session.session_id,
                stop_reason=decision.stop_reason,
                reason=decision.reason,
                level=decision.level,
                decided_at=now,
                outcome=outcome,
                outcome_detail=detail,
                settled_at=None if outcome == Outcome.PENDING else now,
            )
        )
    StopDecision.objects.bulk_create(rows)
    run.found += len(rows)
    run.skipped += sum(row.outcome != Outcome.PENDING for row in rows)
    return [row for row in rows if row.outcome == Outcome.PENDING]


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
        return _sweep(
            trigger=trigger,
            dispatch=dispatch,
            policy=Policy.from_settings(threshold_minutes=threshold_minutes),
            batch_size=batch_size or settings.CLEANUP_BATCH_SIZE,
            dry_run=dry_run,
            session=session,
            now=now or timezone.now(),
        )
    finally:
        if lock.owned():
            lock.release()


def _sweep(
    *,
    trigger: str,
    dispatch: Dispatch,
    policy: Policy,
    batch_size: int,
    dry_run: bool,
    session: ChatSession | None,
    now: datetime,
) -> CleanupRun:
    clock = time.monotonic()
    run = CleanupRun.objects.create(
        trigger=trigger,
        threshold_minutes=int(policy.threshold.total_seconds() // 60),
        dry_run=dry_run,
        batch_size=batch_size,
        started_at=now,
    )
    progress_publish(run, "started")
    # Served by the partial index preview_live: stopped previews are never read.
    previews = Preview.objects.exclude(state=PreviewState.STOPPED).select_related("session")
    if session is not None:
        previews = previews.filter(session=session)
    previews = list(previews)
    run.examined = len(previews)
    containers, unreachable = _containers_by_session(previews, run)
    pending = _record(run, _decisions(previews, containers, unreachable, run, now, policy), now)
    if session is None:
        _reap_orphans(_orphans(containers), run, now)
    run.swept_at = timezone.now()
    run.duration_ms = int((time.monotonic() - clock) * 1000)
    run.save()
    logger.info(
        "sweep %s: %s examined, %s to stop, %s deferred or dry run, %s engine list call(s)",
        run.pk,
        run.examined,
        run.found,
        run.skipped,
        run.engine_list_calls,
        extra={"run": run.pk},
    )
    progress_publish(run, "swept")
    for decision in pending:
        try:
            dispatch(decision)
        except Exception as exc:
            logger.exception(
                "sweep: stop of %s/%s failed", decision.project_id, decision.session_id
            )
            decision_settle(
                decision.pk, StopDecision.Outcome.FAILED, f"{type(exc).__name__}: {exc}"
            )
    run_finish_if_settled(run.pk)
    run.refresh_from_db()
    return run
