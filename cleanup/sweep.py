"""The sweep: one pass over the live previews that decides, and hands out, the stops.

1. Close the runs of sweeps that died, settle the stops lost for good, and find the
   pending stops whose message the broker lost (cleanup.handout).
2. Read the previews that are not stopped (the partial index `preview_live`) and the
   stops under way (the partial index `stop_decision_pending`).
3. List each engine once; tell the health reports what each engine showed. Previews
   stored as stopped whose container runs (started outside the system) join the rest.
4. Reconcile: write the preview rows that disagree with the listing, and only those.
5. Decide for each preview with no stop under way (presence in one Redis round trip).
6. Record the longest-idle stops as pending decisions, at most `batch_size` and within
   each engine's bound on stops in flight (a dry run records
   them as such); the others are counted as deferred and decided again next time.
7. Remove the containers no session owns, and those of previews stopped for longer than
   the retention, each recorded as a decision.
8. Save the run, then hand out the new stops and the ones to hand out again.

Cost follows the previews that are not stopped, never the history: a constant number of
queries, one list call per engine, one Redis round trip for presence. Only `sweep`
writes the run; the steps return values. A Redis lock, renewed while the sweep runs,
makes a second concurrent sweep a no-op however many beats or workers run, and is free
again at most one interval after its holder died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from chat.models import ActivityLevel
from chat.presence import sessions_last_seen
from cleanup.control import decisions_cancel, pause_state, run_cancel_detail
from cleanup.decisions import Decision, Policy, Snapshot, decide
from cleanup.handout import stops_to_hand_out_again
from cleanup.lock import sweep_lock
from cleanup.metrics import metrics_stops_settled, metrics_sweep_recorded, metrics_sweep_skipped
from cleanup.models import CleanupRun, StopDecision
from cleanup.progress import progress_publish
from cleanup.stops import decision_settle, decisions_settle_lost
from kosuke.health import engine_reports_record
from previews.engine import Container, EngineError
from previews.engines import engines
from previews.models import Preview, PreviewState, StopReason
from previews.reach import REMOVED, EngineReach, EnginesDirect, Removal
from previews.reconcile import (
    EngineListing,
    engines_list,
    orphans_find,
    previews_past_retention,
    previews_reconcile,
    sessions_running_elsewhere,
)

logger = logging.getLogger(__name__)

# A sweep task's hard time limit (cleanup.tasks): no sweep runs longer.
SWEEP_TIME_LIMIT = 330
DIED = (
    "the sweep never finished (its worker was lost, or it waited too long for one); "
    "its stops are handed out again"
)

# Hands a stop to whoever carries it out; `take_over` when the task before it has ended.
Dispatch = Callable[..., None]

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
    kept: list[tuple[Preview, Decision]] = field(default_factory=list)
    undecided: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


def _previews(
    *, live: bool, session_pks: set[int] | None = None, changed_before: datetime | None = None
) -> list[Preview]:
    """The previews that are not stopped (`live`), or the stopped ones of `session_pks`."""
    # Only what reconciling and deciding read: thousands of rows are built per sweep.
    previews = Preview.objects.select_related("session").only(
        *_PREVIEW_FIELDS, *(f"session__{name}" for name in _SESSION_FIELDS)
    )
    if live:
        previews = previews.exclude(state=PreviewState.STOPPED)
    else:
        previews = previews.filter(state=PreviewState.STOPPED)
    if session_pks is not None:
        previews = previews.filter(session_id__in=session_pks)
    if changed_before is not None:
        previews = previews.filter(state_changed_at__lt=changed_before)
    return list(previews)


def _stops_pending() -> list[StopDecision]:
    """The stops handed out and not settled, each with its preview's engine (the bound on
    stops in flight counts them per engine)."""
    fields = ("run_id", "chat_session_id", "project_id", "session_id", "decided_at")
    pending = StopDecision.objects.filter(outcome=StopDecision.Outcome.PENDING).only(*fields)
    return list(pending.annotate(preview_engine=F("chat_session__preview__engine")))


def _engines_list_and_report(names: set[str], reach: EngineReach) -> EngineListing:
    """List each engine once (every configured one, and any a preview still names), and
    tell the health reports what each showed: the sweep is what keeps /readyz, placement
    and the statistics current."""
    listing = engines_list(names | set(engines()), reach)
    if reach.records_health:
        engine_reports_record(
            reached=listing.reached,
            unreachable=listing.unreachable,
            running=listing.running_by_engine(),
        )
    return listing


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
        else:
            verdicts.kept.append((preview, decision))
    # Longest idle first: when the batch is full, the freshest sessions wait.
    verdicts.to_stop.sort(key=lambda verdict: verdict[0].session.last_activity_at)
    return verdicts


def _stop_decisions(
    run: CleanupRun, to_stop: list[tuple[Preview, Decision, list[Container]]], now: datetime
) -> list[StopDecision]:
    """The decisions to record for the stops carried out now (or, in a dry run, not)."""
    outcome = StopDecision.Outcome.DRY_RUN if run.dry_run else StopDecision.Outcome.PENDING
    decisions = []
    for preview, decision, running in to_stop:
        stop = StopDecision(
            run=run,
            chat_session=preview.session,
            project_id=preview.session.project_id,
            session_id=preview.session.session_id,
            stop_reason=decision.stop_reason,
            reason=decision.reason,
            level=decision.level,
            containers=[{"id": c.id, "kept": c.is_kept} for c in running],
            decided_at=now,
            due_at=decision.due_at,
            outcome=outcome,
            outcome_detail="dry run: nothing stopped" if run.dry_run else "",
            settled_at=now if run.dry_run else None,
        )
        stop.preview_engine = preview.engine  # as _stops_pending reads it: where it goes
        decisions.append(stop)
    return decisions


def _removals(
    run: CleanupRun,
    listing: EngineListing,
    live_engines: dict[int, str],
    now: datetime,
    reach: EngineReach,
) -> list[StopDecision]:
    """Remove the containers no preview owns (orphans) and those of previews stopped for
    longer than the retention, at most CLEANUP_REMOVALS_PER_SWEEP (orphans first, then
    longest stopped); returns a settled decision for each (a dry run removes nothing).
    `live_engines`: the engine of each preview read as not stopped."""
    room = settings.CLEANUP_REMOVALS_PER_SWEEP
    oldest_first = sorted(
        orphans_find(listing, live_engines=live_engines, now=now),
        key=lambda container: container.created_at or now,
    )
    orphans = oldest_first[:room]
    live = set(live_engines)
    retired = previews_past_retention(listing, live=live, now=now)[: room - len(orphans)]
    decisions, removals = [], []
    for container in orphans:
        decisions.append(
            StopDecision(
                run=run,
                project_id=container.project_id[:64],
                session_id=container.session_id[:64],
                stop_reason=StopReason.ORPHAN,
                reason=f"container {container.name} on {container.engine} belongs to no preview",
                containers=[{"id": container.id, "kept": False}],
            )
        )
        removals.append(Removal(container.engine, [container.id]))
    for preview, containers in retired:
        stopped_for = (now - preview.stopped_at).total_seconds() / 3600
        decisions.append(
            StopDecision(
                run=run,
                chat_session=preview.session,
                project_id=preview.session.project_id,
                session_id=preview.session.session_id,
                stop_reason=StopReason.RETENTION,
                reason=(
                    f"stopped {stopped_for:.0f} h ago, longer than the retention "
                    f"({settings.PREVIEW_RETENTION_HOURS} h)"
                ),
                containers=[{"id": container.id, "kept": False} for container in containers],
            )
        )
        ids = [container.id for container in containers]
        removals.append(Removal(preview.engine, ids, preview.pk, preview.state_changed_at))
    outcomes = [None] * len(removals) if run.dry_run else reach.remove(removals)
    for decision, removed in zip(decisions, outcomes, strict=True):
        decision.outcome, decision.outcome_detail = _removal_outcome(removed)
        decision.level = ActivityLevel.DISCONNECTED
        decision.decided_at = decision.settled_at = now
    return decisions


def _removal_outcome(removed: str | EngineError | None) -> tuple[str, str]:
    """A removal's decision outcome and detail from what `reach.remove` said (None: a dry
    run removed nothing)."""
    if removed is None:
        return StopDecision.Outcome.DRY_RUN, "dry run: kept"
    if isinstance(removed, EngineError):
        return StopDecision.Outcome.FAILED, str(removed)
    if removed == REMOVED:
        return StopDecision.Outcome.STOPPED, removed
    return StopDecision.Outcome.SKIPPED, removed


def sweep(
    *,
    trigger: str,
    dispatch: Dispatch,
    threshold_minutes: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    session_pks: set[int] | None = None,
    now: datetime | None = None,
    concurrency: int = 1,
    reach: EngineReach | None = None,
) -> CleanupRun | None:
    """Sweep now as a new run; see `run_sweep`."""
    run = CleanupRun.new(
        trigger=trigger, threshold_minutes=threshold_minutes, batch_size=batch_size, dry_run=dry_run
    )
    return run_sweep(
        run,
        dispatch=dispatch,
        session_pks=session_pks,
        now=now,
        concurrency=concurrency,
        reach=reach,
    )


def run_sweep(
    run: CleanupRun,
    *,
    dispatch: Dispatch,
    session_pks: set[int] | None = None,
    now: datetime | None = None,
    concurrency: int = 1,
    reach: EngineReach | None = None,
) -> CleanupRun | None:
    """Decide for every live preview (or those of `session_pks`) and hand each stop to
    `dispatch` (`concurrency` at a time; the lock is held until every one returned). The
    engines are listed, and containers removed, through `reach` (default: this process
    calls them itself).

    `run` is new, or one an operator asked for (saved, waiting for a worker). Returns the
    recorded run, or None when another sweep holds the lock.
    """
    with sweep_lock() as held:
        if held is None:
            logger.info("sweep: another sweep is running; nothing to do")
            if run.pk is None:  # dropped (a requested run waits and tries again)
                metrics_sweep_skipped()
            return None
        now = now or timezone.now()
        # Holding the lock, no other sweep runs: a run not swept that started longer ago
        # than a sweep may take belongs to one that died (or waited too long for a worker).
        died = CleanupRun.objects.filter(
            swept_at__isnull=True, started_at__lt=now - timedelta(seconds=SWEEP_TIME_LIMIT)
        ).exclude(pk=run.pk)
        if died.update(swept_at=now, sweep_errors=[{"error": DIED}]):
            logger.warning("sweep: closed the run(s) of a sweep that died")
        if run.pk is not None:
            run.refresh_from_db()
            if run.swept_at is not None:
                logger.warning("sweep: run %s was closed before it could start", run.pk)
                return run
        run.started_at = now
        reach = reach or EnginesDirect()
        if _paused_or_cancelled(run, now, reach):
            return CleanupRun.objects.get(pk=run.pk)
        _save(run, "started_at")
        policy = Policy.from_settings(threshold_minutes=run.threshold_minutes)
        new, again, kept = _sweep(run, policy, session_pks, held.lost, reach)
        _hand_out(run, new, again, dispatch, concurrency)
    swept = CleanupRun.objects.get(pk=run.pk)
    swept.kept = [(str(preview.session), decision) for preview, decision in kept]
    return swept


# What a sweep writes of its run; never `cancelled_at`, which an operator may set meanwhile.
_SWEPT_FIELDS = (
    "examined",
    "deferred",
    "undecided",
    "sweep_errors",
    "engine_list_calls",
    "swept_at",
    "duration_ms",
)


def _save(run: CleanupRun, *fields: str) -> None:
    """Insert a new run whole; update only `fields` of a recorded one."""
    if run.pk is None:
        run.save()
    else:
        run.save(update_fields=fields)


def _paused_or_cancelled(run: CleanupRun, now: datetime, reach: EngineReach) -> bool:
    """Record and end a run that must stop nothing: a scheduled sweep while cleanup is
    paused, or a run cancelled before it started. An explicit run while paused goes ahead,
    and says so."""
    pause = pause_state(now)
    if run.cancelled_at is not None:
        run.note = "cancelled before it started"
    elif pause is not None and run.trigger in CleanupRun.SCHEDULED:
        run.paused, run.note = True, f"{pause.describe()}; nothing stopped"
        # Still report on the engines: a pause is not an outage (/readyz, the statistics).
        live_engines = Preview.objects.exclude(state=PreviewState.STOPPED).values_list(
            "engine", flat=True
        )
        listing = _engines_list_and_report(set(live_engines.distinct()), reach)
        run.engine_list_calls = listing.list_calls
    else:
        if pause is not None:
            run.note = f"cleanup is {pause.describe()}; this {run.trigger} run went ahead"
        return False
    run.swept_at, run.duration_ms = now, 0
    _save(run, "started_at", "paused", "note", "swept_at", "duration_ms", "engine_list_calls")
    logger.info("sweep %s: %s", run.pk, run.note, extra={"run": run.pk})
    progress_publish(run, "finished")
    return True


def _sweep(
    run: CleanupRun,
    policy: Policy,
    session_pks: set[int] | None,
    lock_lost: threading.Event,
    reach: EngineReach,
) -> tuple[list[StopDecision], list[tuple[StopDecision, bool]], list[tuple[Preview, Decision]]]:
    """Steps 1-8 but the handing out; returns the new pending decisions, the older ones
    to hand out again, and the previews kept running with the decision to keep them."""
    clock, now = time.monotonic(), run.started_at
    progress_publish(run, "started")
    lost = decisions_settle_lost(now)
    if lost:
        logger.warning("sweep: %s stop(s) were lost and are decided again", lost)
    pending = _stops_pending()
    previews = _previews(live=True, session_pks=session_pks)
    listed_at = timezone.now()
    listing = _engines_list_and_report({preview.engine for preview in previews}, reach)
    elsewhere = sessions_running_elsewhere(listing, known={p.session_id for p in previews})
    if session_pks is not None:
        elsewhere &= session_pks
    if elsewhere:  # started outside the system: the rules apply to them as well
        # Read after the listing: a row changed since it was taken is newer than it.
        previews += _previews(live=False, session_pks=elsewhere, changed_before=listed_at)
    reachable = [preview for preview in previews if preview.engine not in listing.unreachable]
    previews_reconcile(reachable, listing, now=now)
    under_way = {decision.chat_session_id for decision in pending}
    verdicts = _decide_each(reachable, listing, under_way, now, policy)
    verdicts.undecided += len(previews) - len(reachable)

    due_now = _stops_due(verdicts.to_stop, pending, run.batch_size)
    decisions = _stop_decisions(run, due_now, now)
    if session_pks is None:
        live_engines = {preview.session_id: preview.engine for preview in previews}
        decisions += _removals(run, listing, live_engines, now, reach)
    if lock_lost.is_set():  # another sweep may be deciding now: leave it to that one
        raise RuntimeError("the sweep lost its lock before recording its decisions")
    StopDecision.objects.bulk_create(decisions)
    metrics_stops_settled(d for d in decisions if d.outcome != StopDecision.Outcome.PENDING)

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
    _save(run, *_SWEPT_FIELDS)
    metrics_sweep_recorded(run.duration_ms / 1000)
    again = [] if run.dry_run or session_pks else stops_to_hand_out_again(pending, previews, now)
    logger.info(
        "sweep %s: %s examined, %s to stop now, %s deferred, %s undecided, %s handed out "
        "again, %s list call(s)",
        run.pk,
        run.examined,
        len(due_now),
        run.deferred,
        run.undecided,
        len(again),
        run.engine_list_calls,
        extra={"run": run.pk},
    )
    progress_publish(run, "swept", decisions)
    new = [d for d in decisions if d.outcome == StopDecision.Outcome.PENDING]
    if new and CleanupRun.objects.filter(pk=run.pk, cancelled_at__isnull=False).exists():
        # Cancelled while deciding: the cancel may have missed these decisions.
        decisions_cancel(run, run_cancel_detail(run))
        new = []
    return new, again, verdicts.kept


def _stops_due(
    to_stop: list[tuple[Preview, Decision, list]], pending: list[StopDecision], batch_size: int
) -> list[tuple[Preview, Decision, list]]:
    """The stops to hand out now, longest idle first: at most `batch_size`, and on each
    engine only while its stops in flight (handed out, not settled) stay within
    CLEANUP_STOPS_IN_FLIGHT_PER_ENGINE. The rest are decided again by the next sweep."""
    in_flight = Counter(decision.preview_engine for decision in pending)
    due = []
    for verdict in to_stop:
        if len(due) == batch_size:
            break
        engine = verdict[0].engine
        if in_flight[engine] < settings.CLEANUP_STOPS_IN_FLIGHT_PER_ENGINE:
            in_flight[engine] += 1
            due.append(verdict)
    return due


def _hand_out(
    run: CleanupRun,
    new: list[StopDecision],
    again: list[tuple[StopDecision, bool]],
    dispatch: Dispatch,
    concurrency: int,
) -> None:
    """Give each stop to `dispatch`, `concurrency` at a time (a dispatch that stops in
    this process waits on the engine); one that cannot be handed out fails alone."""

    def hand_out(decision: StopDecision, take_over: bool) -> None:
        try:
            dispatch(decision, take_over=take_over)
        except Exception as exc:
            logger.exception(
                "sweep: stop of %s/%s failed", decision.project_id, decision.session_id
            )
            decision_settle(decision, StopDecision.Outcome.FAILED, f"{type(exc).__name__}: {exc}")

    def hand_out_in_thread(decision: StopDecision, take_over: bool) -> None:
        try:
            hand_out(decision, take_over)
        finally:
            connection.close()  # the thread's own connection

    stops = [*((decision, False) for decision in new), *again]
    if concurrency > 1 and len(stops) > 1:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="stop") as pool:
            list(pool.map(lambda stop: hand_out_in_thread(*stop), stops))
    else:
        for decision, take_over in stops:
            hand_out(decision, take_over)
    if not new:
        progress_publish(run, "finished")
