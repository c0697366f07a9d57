"""Open, stop and inspect the preview of a chat session on its Docker engine.

The database holds what we last knew; the engine is the truth about containers. State
changes are conditional UPDATEs from the expected state (the healthchecks way): whoever
changes the row first does the work, and a second caller sees that and backs off, so two
opens cannot create two sets of containers and two stops cannot race. No lock is held
across a Docker call. The row says "stopped" only after the engine confirmed the stop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from chat.models import ChatSession
from chat.services import activity_record
from kosuke.errors import ApplicationError
from previews.engine import (
    Container,
    EngineError,
    PermanentEngineError,
    engine,
    preview_labels,
)
from previews.models import Preview, PreviewState, StopReason
from previews.reconcile import preview_reconcile


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


class PreviewAction(enum.StrEnum):
    """What a person may ask of a preview (the API and the admin)."""

    OPEN = "open"
    STATUS = "status"
    STOP = "stop"


@dataclass(frozen=True)
class PreviewStatus:
    preview: Preview
    containers: list[Container]


def _preview_for(session: ChatSession) -> Preview:
    preview, _created = Preview.objects.get_or_create(
        session=session, defaults={"engine": engine().url}
    )
    return preview


def _labels(session: ChatSession) -> dict[str, str]:
    return preview_labels(
        session_pk=session.pk, project_id=session.project_id, session_id=session.session_id
    )


def container_name(session: ChatSession) -> str:
    """Unique per engine and session, so racing creates meet at the engine as well."""
    return f"kosuke-preview-{settings.PREVIEW_MANAGED_BY}-{session.pk}"


def preview_open(*, session: ChatSession, now: datetime | None = None) -> Preview:
    """Make the session's preview run: create its container, or start the stopped one again.

    Opening counts as activity, so a reopened preview gets a fresh idle period. When
    another request is already starting it, this returns its state without touching the
    engine; while it is being stopped, the open is refused (409) rather than lost.
    """
    now = now or timezone.now()
    activity_record(session=session, now=now)
    preview = _preview_for(session)
    was_running = preview.state == PreviewState.RUNNING
    claimed = preview.transition(
        from_states=[PreviewState.STOPPED, PreviewState.FAILED, PreviewState.RUNNING],
        to=PreviewState.STARTING,
        now=now,
    )
    if not claimed:
        preview.refresh_from_db()
        if preview.state == PreviewState.STOPPING:
            raise ApplicationError(
                "the preview is stopping right now; open it again in a moment", status=409
            )
        return preview  # another request is starting it
    preview_engine = engine(preview.engine)
    try:
        containers = preview_engine.containers(_labels(session))
        if containers:
            to_start = [container.id for container in containers if not container.is_running]
        else:
            to_start = [
                preview_engine.create(
                    name=container_name(session),
                    labels=_labels(session),
                    environment={
                        "KOSUKE_PROJECT_ID": session.project_id,
                        "KOSUKE_SESSION_ID": session.session_id,
                    },
                )
            ]
        for container_id in to_start:
            preview_engine.start(container_id)
    except EngineError as exc:
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
        started_at=preview.started_at if was_running and preview.started_at else now,
        start_detail=preview.start_detail if was_running else "opened",
        last_error="",
    )
    return preview


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
    preview.refresh_from_db(fields=["state", "claim_token"])
    if preview.state == PreviewState.STOPPING and preview.claim_token == token:
        _restart(preview, container_ids, token=token, now=now)
        return StopOutcome.RESTARTED
    return StopOutcome.BUSY  # a sweep settled the claim meanwhile: someone else's now


def _restart(preview: Preview, container_ids: list[str], *, token: str, now: datetime) -> None:
    """Start again the containers a claimed stop just stopped (see preview_stop_claimed)."""
    preview.transition(
        from_states=[PreviewState.STOPPING],
        to=PreviewState.STARTING,
        now=now,
        guard=Q(claim_token=token),
        claim_token="",
    )
    try:
        for container_id in container_ids:
            engine(preview.engine).start(container_id)
    except EngineError as exc:
        stopped = Preview.stop_fields(
            now=now, reason=StopReason.FAILED_START, detail="the preview failed to start again"
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
        started_at=now,
        start_detail=RESTARTED,
        last_error="",
    )


def preview_stop(
    *, session: ChatSession, reason: StopReason, detail: str = "", now: datetime | None = None
) -> StopOutcome:
    """Stop the session's preview now: claim it, list its containers, stop them.

    Automatic reasons (any but MANUAL) leave containers labelled `kosuke.keep=true`
    running. Safe to repeat.
    """
    now = now or timezone.now()
    preview = Preview.objects.filter(session=session).first()
    if preview is None:
        return StopOutcome.ALREADY_STOPPED
    claimed_from = preview.state
    token = f"{reason}:{now.timestamp()}"
    if not preview_claim_stop(preview, token=token, now=now):
        preview.refresh_from_db()
        if preview.state == PreviewState.STOPPED:
            return StopOutcome.ALREADY_STOPPED
        return StopOutcome.BUSY
    try:
        running = preview_containers_running(preview)
    except EngineError as exc:
        preview_release(preview, to=claimed_from, token=token, now=now, error=str(exc))
        raise
    keep = reason != StopReason.MANUAL
    return preview_stop_claimed(
        preview,
        container_ids=[c.id for c in running if not (keep and c.is_kept)],
        kept_running=keep and any(c.is_kept for c in running),
        reason=reason,
        detail=detail,
        token=token,
        now=now,
        released_to=claimed_from,
    )


def preview_containers_running(preview: Preview) -> list[Container]:
    """The preview's running containers, as its engine lists them now (one call)."""
    listed = engine(preview.engine).containers(_labels(preview.session))
    return [container for container in listed if container.is_running]


def preview_status(*, session: ChatSession, now: datetime | None = None) -> PreviewStatus:
    """The preview and its containers as the engine sees them now (the row is reconciled)."""
    preview = _preview_for(session)
    containers = engine(preview.engine).containers(_labels(session))
    return PreviewStatus(preview_reconcile(preview, containers, now=now), containers)


def preview_act(*, session: ChatSession, action: PreviewAction, actor: str = "") -> PreviewStatus:
    """Do what a person asked of the preview and return its status.

    A stop while the preview is starting is refused (409) rather than silently dropped.
    """
    if action == PreviewAction.OPEN:
        preview_open(session=session)
    elif action == PreviewAction.STOP:
        outcome = preview_stop(
            session=session, reason=StopReason.MANUAL, detail=f"stopped by {actor}"
        )
        if outcome == StopOutcome.BUSY:
            raise ApplicationError(
                "the preview is being started or stopped right now; try again in a moment",
                status=409,
            )
    return preview_status(session=session)
