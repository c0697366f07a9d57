"""Carrying out one stop decision: decide again on the state as read, claim, stop, record.

One way through, safe to repeat: a settled decision is left alone; a stop that this
decision claimed and did not finish is finished by whoever may take it over (a
redelivery after its worker died, a retry, a hand-out after its task gave up, or anyone
once the claim is older than a stop can take); a second copy of a stop that is still
running leaves it alone.
The normal path costs five SQL statements (read, mark begun, claim, mark stopped, settle)
and one Docker call per running container, which the sweep's listing already named.
Marking the decision begun is what lets an operator cancel a stop exactly: before it,
a cancel wins and nothing is stopped; after it, the stop finishes.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat.presence import sessions_last_seen
from cleanup.decisions import Policy, Snapshot, decide
from cleanup.handout import TAKE_OVER_AFTER, claim_prefix, handout_clear, pending_lost_after
from cleanup.metrics import metrics_stops_settled
from cleanup.models import StopDecision
from cleanup.progress import progress_stop_settled
from previews.lifecycle import (
    StopOutcome,
    preview_claim_stop,
    preview_containers_running,
    preview_stop_claimed,
    preview_take_over,
)
from previews.models import PreviewState

logger = logging.getLogger(__name__)


def decision_settle(
    decision: StopDecision, outcome: str, detail: str, *, now: datetime | None = None
) -> bool:
    """Record how a pending decision ended, exactly once: False if it was settled already
    (a redelivered task)."""
    now = now or timezone.now()
    settled = StopDecision.objects.filter(
        pk=decision.pk, outcome=StopDecision.Outcome.PENDING
    ).update(outcome=outcome, outcome_detail=detail, settled_at=now)
    if not settled:
        return False
    decision.outcome, decision.outcome_detail, decision.settled_at = outcome, detail, now
    session = f"{decision.project_id}/{decision.session_id}"
    words = outcome if detail in ("", outcome) else f"{outcome} ({detail})"
    logger.info("stop %s: %s", session, words, extra={"session": session})
    handout_clear(decision.pk)
    progress_stop_settled(decision)
    metrics_stops_settled([decision])
    return True


def decisions_settle_lost(now: datetime) -> int:
    """Settle as failed the stops handed out so long ago that their message was lost;
    returns how many. Their sessions are decided again by this sweep."""
    lost = StopDecision.objects.filter(
        outcome=StopDecision.Outcome.PENDING, decided_at__lt=now - pending_lost_after()
    )
    with transaction.atomic():
        decisions = list(lost.select_for_update().only("stop_reason"))
        StopDecision.objects.filter(pk__in=[d.pk for d in decisions]).update(
            outcome=StopDecision.Outcome.FAILED,
            outcome_detail="lost: never carried out",
            settled_at=now,
        )
    for decision in decisions:
        decision.outcome = StopDecision.Outcome.FAILED
    metrics_stops_settled(decisions)
    return len(decisions)


UNDER_WAY = "under way"


def decision_execute(
    *, decision_id: int, take_over: bool = False, now: datetime | None = None
) -> str:
    """Carry out a pending stop decision; returns its outcome, or UNDER_WAY when another
    copy of it holds a fresh claim (that one settles it).

    `take_over`: the task that claimed before this one has ended (this is its redelivery,
    its retry, or a hand-out after it gave up), so its claim may be taken over at once.
    Raises EngineError when the engine fails, leaving the decision pending for a retry.
    """
    now = now or timezone.now()
    began = time.monotonic()
    decision = (
        StopDecision.objects.select_related("run", "chat_session__preview")
        .filter(pk=decision_id)
        .first()
    )
    if decision is None:
        return "missing"
    if decision.outcome != StopDecision.Outcome.PENDING:
        return decision.outcome  # a redelivered task, or cancelled: it is settled
    result = _carry_out(decision, take_over, now)
    if result is None:
        # Whoever holds the claim settles it; should it die, its claim ages until anyone
        # may take it over, and without a marker the sweep hands this out again then.
        handout_clear(decision.pk)
        return UNDER_WAY
    # Settled when the engine answered: a stop can take its whole stop timeout.
    decision_settle(decision, *result, now=now + timedelta(seconds=time.monotonic() - began))
    return result[0]


def _carry_out(decision: StopDecision, take_over: bool, now: datetime) -> tuple[str, str] | None:
    Outcome = StopDecision.Outcome
    session = decision.chat_session
    preview = getattr(session, "preview", None) if session else None
    if preview is None:
        return Outcome.SKIPPED, "the session or its preview is gone"
    # Each attempt claims with a token of its own: of two copies of one stop, only the
    # one whose conditional UPDATE lands may act (and release, or mark stopped).
    prefix = claim_prefix(decision.pk)
    token = f"{prefix}{uuid.uuid4().hex[:16]}"
    reason, detail = decision.stop_reason, decision.reason
    own_claim = preview.state == PreviewState.STOPPING and preview.claim_token.startswith(prefix)
    if own_claim:
        abandoned = now - preview.state_changed_at >= TAKE_OVER_AFTER
        if not (take_over or abandoned) or not preview_take_over(preview, token=token, now=now):
            return None  # another copy of this stop is at it
    elif preview.state == PreviewState.STOPPED:
        return _as_decision_outcome(StopOutcome.ALREADY_STOPPED)
    elif preview.state in (PreviewState.STARTING, PreviewState.STOPPING):
        return _as_decision_outcome(StopOutcome.BUSY)
    # The sweep names the running containers; a decision without them (made before they
    # were recorded) has them listed now rather than none stopped.
    containers = decision.containers or [
        {"id": c.id, "kept": c.is_kept} for c in preview_containers_running(preview)
    ]
    if not own_claim:
        # Decide again on the state as read, then claim it only if nothing the decision
        # read has changed since.
        policy = Policy.from_settings(threshold_minutes=decision.run.threshold_minutes)
        last_seen_at = sessions_last_seen([session.pk])[session.pk]
        kept = bool(containers) and all(c["kept"] for c in containers)
        snapshot = Snapshot.of(preview, last_seen_at=last_seen_at, kept=kept)
        fresh = decide(snapshot, now, policy)
        if not fresh.stop:
            return Outcome.SKIPPED, f"not stopped after all: {fresh.reason}"
        if not _begin(decision, now):  # cancelled: settled already, so nothing is recorded
            return Outcome.CANCELLED, "cancelled before it began"
        if not preview_claim_stop(preview, token=token, now=now, unchanged_since_read=True):
            preview.refresh_from_db(fields=["state", "claim_token"])
            if preview.state == PreviewState.STOPPING and preview.claim_token.startswith(prefix):
                return None  # another copy of this stop claimed it a moment ago
            return Outcome.SKIPPED, "it changed while being decided; the next sweep decides again"
        reason, detail = fresh.stop_reason, fresh.reason
    stopped = preview_stop_claimed(
        preview,
        container_ids=[c["id"] for c in containers if not c["kept"]],
        kept_running=any(c["kept"] for c in containers),
        reason=reason,
        detail=detail,
        token=token,
        now=now,
    )
    return _as_decision_outcome(stopped)


def _begin(decision: StopDecision, now: datetime) -> bool:
    """Mark the decision begun, unless an operator cancelled it first: the cancel and this
    update the same row, so exactly one of them wins (cleanup.control.decisions_cancel)."""
    return bool(
        StopDecision.objects.filter(pk=decision.pk, outcome=StopDecision.Outcome.PENDING).update(
            began_at=Coalesce(F("began_at"), Value(now))
        )
    )


def _as_decision_outcome(stop: StopOutcome) -> tuple[str, str]:
    outcome = StopDecision.Outcome.STOPPED if stop.is_stopped else StopDecision.Outcome.SKIPPED
    return outcome, stop.detail


def stop_inline(decision: StopDecision, *, take_over: bool = False) -> None:
    """Carry out a decision in this process, once, without a worker (a sweep's dispatch)."""
    decision_execute(decision_id=decision.pk, take_over=take_over)
