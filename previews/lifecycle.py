"""Starting and stopping a preview's containers once a caller holds it (the state machine's
mechanics, shared by the actions of people in previews.services and the cleanup's stops).

State changes are conditional UPDATEs from the expected state (the healthchecks way):
whoever changes the row first does the work, and a second caller sees that and backs
off. No lock is held across a Docker call. The row says "stopped" only after the engine
confirmed the stop of every running container.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, Q

from chat.models import ChatSession
from kosuke.database import connection_give_back
from previews.engine import (
    Container,
    EngineError,
    PermanentEngineError,
    engine,
    preview_labels,
)
from previews.models import Preview, PreviewState, StopReason


class StopOutcome(enum.StrEnum):
    """How a stop ended: the one vocabulary from the engine call to the cleanup run."""

    STOPPED = "stopped"
    ALREADY_STOPPED = "already_stopped"
    BUSY = "busy"  # another process is starting or stopping it right now
    KEPT = "kept"  # containers labelled kosuke.keep=true still run
    RESTARTED = "restarted"  # stopped, then started again: activity came while it stopped

    @property
    def is_stopped(self) -> bool:
        return self in (StopOutcome.STOPPED, StopOutcome.ALREADY_STOPPED)

    @property
    def detail(self) -> str:
        return {
            StopOutcome.STOPPED: "stopped",
            StopOutcome.ALREADY_STOPPED: "already stopped",
            StopOutcome.BUSY: "another process is starting or stopping it",
            StopOutcome.KEPT: "kept: containers labelled kosuke.keep=true still run",
            StopOutcome.RESTARTED: RESTARTED,
        }[self]


RESTARTED = "stopped, then started again: there was activity while it was stopping"


def preview_labels_of(session: ChatSession) -> dict[str, str]:
    return preview_labels(
        session_pk=session.pk, project_id=session.project_id, session_id=session.session_id
    )


def start_claimed(
    preview: Preview,
    to_start: Callable[[], list[str]],
    *,
    now: datetime,
    started_at: datetime,
    start_detail: str,
) -> None:
    """Start the containers `to_start()` names of a preview this caller moved to STARTING:
    RUNNING once the engine started them all, FAILED (and EngineError) if it refused."""
    try:
        for container_id in to_start():
            engine(preview.engine).start(container_id)
    except BaseException as exc:  # the engine refused, or a time limit or shutdown came
        stopped = Preview.stop_fields(
            now=now, reason=StopReason.FAILED_START, detail="the preview failed to start"
        )
        preview.transition(
            from_states=[PreviewState.STARTING],
            to=PreviewState.FAILED,
            now=now,
            **{**stopped, "last_error": str(exc)},
        )
        raise
    preview.transition(
        from_states=[PreviewState.STARTING],
        to=PreviewState.RUNNING,
        now=now,
        started_at=started_at,
        start_detail=start_detail,
        last_error="",
    )


def preview_claim_stop(
    preview: Preview, *, token: str, now: datetime, unchanged_since_read: bool = False
) -> bool:
    """Claim the preview for a stop: RUNNING/FAILED -> STOPPING, holding `token`.

    With `unchanged_since_read`, only if neither the preview row nor what the decision
    rules read of its session (activity, keep-alive, idle timeout) changed since
    `preview` was read: a stop decided on that reading is still right. False: someone
    else has it, it is stopped already, or something changed.
    """
    guard = None
    if unchanged_since_read:
        session = preview.session
        # The session's part is an EXISTS, not a join: the UPDATE stays on the preview row
        # alone, so PostgreSQL re-checks the state on that row if someone changed it first.
        session_as_read = ChatSession.objects.filter(
            pk=OuterRef("session_id"),
            last_activity_at=session.last_activity_at,
            busy_until=session.busy_until,
            idle_timeout_minutes=session.idle_timeout_minutes,
        )
        guard = Q(state_changed_at=preview.state_changed_at) & Q(Exists(session_as_read))
    return preview.transition(
        from_states=[PreviewState.RUNNING, PreviewState.FAILED],
        to=PreviewState.STOPPING,
        now=now,
        guard=guard,
        claim_token=token,
    )


def preview_take_over(preview: Preview, *, token: str, now: datetime) -> bool:
    """Take over a stop claim as read (its holder ended): one conditional UPDATE, so of two
    callers at most one gets it. The claim's age starts again."""
    return preview.transition(
        from_states=[PreviewState.STOPPING],
        to=PreviewState.STOPPING,
        now=now,
        guard=Q(claim_token=preview.claim_token, state_changed_at=preview.state_changed_at),
        claim_token=token,
    )


def preview_release(
    preview: Preview, *, to: str, token: str, now: datetime, error: str = ""
) -> None:
    """Give back a stop claim: STOPPING -> `to` (RUNNING, or FAILED where it came from)."""
    preview.transition(
        from_states=[PreviewState.STOPPING],
        to=to,
        now=now,
        guard=Q(claim_token=token),
        claim_token="",
        last_error=error,
    )


def preview_stop_claimed(
    preview: Preview,
    *,
    container_ids: list[str],
    kept_running: bool,
    reason: StopReason,
    detail: str,
    token: str,
    now: datetime,
    released_to: str = PreviewState.RUNNING,
) -> StopOutcome:
    """Stop `container_ids` of a preview this caller claimed with `token`; mark it stopped.

    Docker's answer to each stop is its confirmation (stopped, or already gone). Containers
    fail independently; if any fails the claim goes back (`released_to`) and EngineError
    names every failure, so the caller may retry. With `kept_running` (containers labelled
    kosuke.keep=true run on), the preview stays running. An automatic stop during which
    the session saw activity (a message sent after the claim) starts the containers again:
    the user who spoke gets the preview back, not a stopped one.
    """
    preview_engine = engine(preview.engine)
    failures: list[EngineError] = []
    # A stop may wait its whole stop timeout on Docker: its database connection is not
    # held meanwhile (an engine worker runs tens of them on a few pooled connections).
    connection_give_back()
    began = time.monotonic()
    try:
        for container_id in container_ids:
            try:
                preview_engine.stop(container_id)
            except EngineError as exc:
                failures.append(exc)
    except BaseException:  # a time limit, a shutdown: give the claim back on the way out
        preview_release(preview, to=released_to, token=token, now=now)
        raise
    if failures:
        errors = "; ".join(str(failure) for failure in failures)
        preview_release(preview, to=released_to, token=token, now=now, error=errors)
        permanent = all(failure.permanent for failure in failures)
        error = PermanentEngineError if permanent else EngineError
        raise error(f"could not stop the preview of {preview.session}: {errors}")
    # Stopped when the engine confirmed it, a stop timeout after the claim at worst.
    now += timedelta(seconds=time.monotonic() - began)
    if kept_running:
        preview_release(preview, to=PreviewState.RUNNING, token=token, now=now)
        return StopOutcome.KEPT
    guard = Q(claim_token=token)
    if reason != StopReason.MANUAL:
        active_since_claim = ChatSession.objects.filter(
            pk=OuterRef("session_id"), last_activity_at__gt=preview.state_changed_at
        )
        guard &= ~Q(Exists(active_since_claim))
    if preview.transition(
        from_states=[PreviewState.STOPPING],
        to=PreviewState.STOPPED,
        now=now,
        guard=guard,
        **Preview.stop_fields(now=now, reason=reason, detail=detail),
    ):
        return StopOutcome.STOPPED
    # Still ours, so there was activity since the claim: start it again.
    if _restart(preview, container_ids, token=token, now=now):
        return StopOutcome.RESTARTED
    return StopOutcome.BUSY  # a sweep settled the claim meanwhile: someone else's now


def _restart(preview: Preview, container_ids: list[str], *, token: str, now: datetime) -> bool:
    """Start again the containers a claimed stop just stopped (see preview_stop_claimed);
    False if the claim was lost meanwhile."""
    if not preview.transition(
        from_states=[PreviewState.STOPPING],
        to=PreviewState.STARTING,
        now=now,
        guard=Q(claim_token=token),
        claim_token="",
    ):
        return False
    start_claimed(preview, lambda: container_ids, now=now, started_at=now, start_detail=RESTARTED)
    return True


def preview_containers_remove(preview: Preview, container_ids: list[str], *, now: datetime) -> bool:
    """Remove the containers of a preview stopped long ago (retention), with their volumes.

    Claimed first (STOPPED -> STOPPING, as read): an open meanwhile is refused (409) rather
    than starting a container being removed; STOPPED again after, its stop unchanged, and
    held by no engine (its next open is placed afresh). False if it changed first
    (reopened). EngineError if a removal failed.
    """
    token = f"{StopReason.RETENTION}:{now.timestamp()}"
    if not preview.transition(
        from_states=[PreviewState.STOPPED],
        to=PreviewState.STOPPING,
        now=now,
        guard=Q(state_changed_at=preview.state_changed_at),
        claim_token=token,
    ):
        return False
    connection_give_back()  # as a stop does, while Docker works
    removed = False
    try:
        for container_id in container_ids:
            engine(preview.engine).remove(container_id)
        removed = True
    finally:
        preview.transition(
            from_states=[PreviewState.STOPPING],
            to=PreviewState.STOPPED,
            now=now,
            guard=Q(claim_token=token),
            claim_token="",
            engine="" if removed else preview.engine,
        )
    return True


def preview_containers_running(preview: Preview) -> list[Container]:
    """The preview's running containers, as its engine lists them now (one call)."""
    listed = engine(preview.engine).containers(preview_labels_of(preview.session))
    return [container for container in listed if container.is_running]
