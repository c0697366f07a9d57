"""Carrying out one stop decision: re-decide, stop, record how it ended. Safe to repeat."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.presence import sessions_presence
from cleanup.decisions import Policy, Snapshot, decide
from cleanup.models import CleanupRun, StopDecision
from cleanup.progress import progress_publish
from previews.models import Preview, PreviewState
from previews.services import StopOutcome, preview_claim_stop, preview_release, preview_stop

logger = logging.getLogger(__name__)
Outcome = StopDecision.Outcome

# How a stop that went through is counted in its run.
_OUTCOMES = {
    StopOutcome.STOPPED: (Outcome.STOPPED, "stopped"),
    StopOutcome.ALREADY_STOPPED: (Outcome.STOPPED, "already stopped"),
    StopOutcome.KEPT: (Outcome.SKIPPED, "kept: containers labelled kosuke.keep=true still run"),
    StopOutcome.BUSY: (Outcome.SKIPPED, "another process is starting or stopping it"),
}
_RUN_COUNTER = {Outcome.STOPPED: "stopped", Outcome.SKIPPED: "skipped", Outcome.FAILED: "failed"}


def run_finish_if_settled(run_id: int, now: datetime | None = None) -> None:
    """Mark the run finished once every decision it found has ended."""
    finished = CleanupRun.objects.filter(
        pk=run_id,
        finished_at__isnull=True,
        found__lte=F("stopped") + F("skipped") + F("failed"),
    ).update(finished_at=now or timezone.now())
    if finished:
        progress_publish(CleanupRun.objects.get(pk=run_id), "finished")


def decision_settle(decision_id: int, outcome: str, detail: str) -> bool:
    """Record how a pending decision ended and count it in its run, exactly once."""
    now = timezone.now()
    with transaction.atomic():
        settled = StopDecision.objects.filter(pk=decision_id, outcome=Outcome.PENDING).update(
            outcome=outcome, outcome_detail=detail, settled_at=now
        )
        if not settled:
            return False  # a redelivered task: the first delivery settled it
        decision = StopDecision.objects.get(pk=decision_id)
        run = CleanupRun.objects.select_for_update().get(pk=decision.run_id)
        setattr(run, _RUN_COUNTER[outcome], getattr(run, _RUN_COUNTER[outcome]) + 1)
        if outcome == Outcome.FAILED:
            run.errors.append(
                {"session": f"{decision.project_id}/{decision.session_id}", "error": detail}
            )
        run.save(update_fields=[_RUN_COUNTER[outcome], "errors"])
    logger.info(
        "stop %s/%s: %s (%s)",
        decision.project_id,
        decision.session_id,
        outcome,
        detail,
        extra={"session": f"{decision.project_id}/{decision.session_id}"},
    )
    progress_publish(run, "stopping")
    run_finish_if_settled(run.pk, now)
    return True


def decision_execute(*, decision_id: int, now: datetime | None = None) -> str:
    """Carry out a pending stop decision; returns its outcome.

    Claims the preview, then decides again on fresh data (a message may have arrived since
    the sweep) and gives the claim back if it should keep running. A stop that this
    decision began and did not finish (its worker died) is taken over. Raises EngineError
    when the engine fails, leaving the decision pending for a retry.
    """
    now = now or timezone.now()
    token = f"decision:{decision_id}"
    decision = StopDecision.objects.select_related("run").filter(pk=decision_id).first()
    if decision is None or decision.outcome != Outcome.PENDING:
        return decision.outcome if decision else "missing"
    preview = (
        Preview.objects.filter(session_id=decision.chat_session_id)
        .select_related("session")
        .first()
    )
    if preview is None:
        decision_settle(decision_id, Outcome.SKIPPED, "the session or its preview is gone")
        return Outcome.SKIPPED

    # Claim first, then decide on fresh data (as DESIGN says): a message that lands after
    # the claim finds the stop under way; one that landed before it is seen here.
    if not preview_claim_stop(preview, token=token, now=now):
        preview.refresh_from_db()
        busy = (
            StopOutcome.ALREADY_STOPPED
            if preview.state == PreviewState.STOPPED
            else StopOutcome.BUSY
        )
        outcome, outcome_detail = _OUTCOMES[busy]
        decision_settle(decision_id, outcome, outcome_detail)
        return outcome
    preview.session.refresh_from_db()
    policy = Policy.from_settings(threshold_minutes=decision.run.threshold_minutes)
    presence = sessions_presence([preview.session_id], now=now)[preview.session_id]
    # We hold the claim: judge the preview as the running one it was.
    snapshot = replace(Snapshot.of(preview, presence, []), preview_state=PreviewState.RUNNING)
    fresh = decide(snapshot, now, policy)
    if not fresh.stop:
        preview_release(preview, token=token, now=now)
        decision_settle(decision_id, Outcome.SKIPPED, f"not stopped after all: {fresh.reason}")
        return Outcome.SKIPPED

    stop_outcome = preview_stop(
        session=preview.session,
        reason=fresh.stop_reason,
        detail=fresh.reason,
        token=token,
        now=now,
    )
    outcome, outcome_detail = _OUTCOMES[stop_outcome]
    decision_settle(decision_id, outcome, outcome_detail)
    return outcome


def stop_inline(decision: StopDecision) -> None:
    """Carry out a decision in this process, once, without a worker (a sweep's dispatch)."""
    decision_execute(decision_id=decision.pk)
