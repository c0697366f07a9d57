"""Open, stop and inspect the preview of a chat session, reconciled with the Docker engine.

The database holds what we last knew; the engine is the truth about containers. State
changes are conditional UPDATEs from the expected state (the healthchecks way): whoever
changes the row first does the work, and a second caller sees that and backs off, so two
opens cannot create two sets of containers and two stops cannot race. The row says
"stopped" only after the engine has confirmed that no container of the preview runs.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from chat.models import ChatSession
from chat.services import activity_record
from kosuke.errors import ApplicationError
from previews.engine import Container, EngineError, engine, preview_labels
from previews.models import ALLOWED_TRANSITIONS, Preview, PreviewState, StopReason

State = PreviewState
# A start or stop that has not finished after this long was interrupted (a worker died).
TRANSITION_STALE_AFTER = timedelta(minutes=5)


class StopOutcome(enum.StrEnum):
    STOPPED = "stopped"
    ALREADY_STOPPED = "already_stopped"
    BUSY = "busy"  # another process is starting or stopping it right now
    KEPT = "kept"  # every running container is labelled kosuke.keep=true


@dataclass(frozen=True)
class PreviewStatus:
    preview: Preview
    containers: list[Container]


def _transition(
    preview: Preview,
    *,
    from_states: Iterable[str],
    to: str,
    now: datetime,
    unchanged_since_read: bool = False,
    claimed_by: str | None = None,
    **fields: Any,
) -> bool:
    """Move `preview` to `to` if it is still in one of `from_states`; False if it was not.

    With `unchanged_since_read`, also only if no one changed the row since `preview` was
    read: for conclusions drawn from an engine listing that may be older than the row.
    With `claimed_by`, only if that token holds the claim.
    """
    from_states = list(from_states)
    for state in from_states:
        if to not in ALLOWED_TRANSITIONS[state]:
            raise ValueError(f"a preview cannot go from {state} to {to}")
    rows = Preview.objects.filter(pk=preview.pk, state__in=from_states)
    if unchanged_since_read:
        if preview.state not in from_states:
            return False  # the row as read does not qualify; no need to ask the database
        rows = rows.filter(state_changed_at=preview.state_changed_at)
    if claimed_by is not None:
        rows = rows.filter(claim_token=claimed_by)
    changed = rows.update(state=to, state_changed_at=now, **fields)
    if changed:
        preview.state, preview.state_changed_at = to, now
        for name, value in fields.items():
            setattr(preview, name, value)
    return bool(changed)


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
    was_running = preview.state == State.RUNNING
    claimed = _transition(
        preview,
        from_states=[State.STOPPED, State.FAILED, State.RUNNING],
        to=State.STARTING,
        now=now,
    )
    if not claimed:
        preview.refresh_from_db()
        if preview.state == State.STOPPING:
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
        _transition(
            preview,
            from_states=[State.STARTING],
            to=State.FAILED,
            now=now,
            stopped_at=now,
            last_stop_reason=StopReason.FAILED_START,
            last_stop_detail="the preview failed to start",
            last_error=str(exc),
        )
        raise
    started_at = preview.started_at if was_running and preview.started_at else now
    _transition(
        preview,
        from_states=[State.STARTING],
        to=State.RUNNING,
        now=now,
        started_at=started_at,
        last_error="",
    )
    return preview


def preview_claim_stop(preview: Preview, *, token: str, now: datetime) -> bool:
    """Claim the preview for a stop: RUNNING/FAILED -> STOPPING, or a STOPPING that
    `token` itself claimed earlier (a redelivered task). False: someone else has it, or
    it is stopped already."""
    if token and preview.state == State.STOPPING and preview.claim_token == token:
        return True
    return _transition(
        preview,
        from_states=[State.RUNNING, State.FAILED],
        to=State.STOPPING,
        now=now,
        claim_token=token,
    )


def preview_release(preview: Preview, *, token: str, now: datetime) -> None:
    """Give back a stop claim that will not be used: STOPPING -> RUNNING."""
    _transition(
        preview,
        from_states=[State.STOPPING],
        to=State.RUNNING,
        now=now,
        claimed_by=token,
        claim_token="",
    )


def preview_stop(
    *,
    session: ChatSession,
    reason: StopReason,
    detail: str = "",
    token: str = "",
    now: datetime | None = None,
) -> StopOutcome:
    """Stop the session's preview containers and mark it stopped once the engine confirms.

    Automatic stops (any reason but MANUAL) leave containers labelled `kosuke.keep=true`
    running. Containers fail independently; if any still runs afterwards the preview stays
    as it was and EngineError names each failure, so the caller may retry. Safe to repeat;
    a caller presenting the `token` of an interrupted stop takes it over.
    """
    now = now or timezone.now()
    preview = Preview.objects.filter(session=session).first()
    if preview is None:
        return StopOutcome.ALREADY_STOPPED
    previous_state = preview.state
    if not preview_claim_stop(preview, token=token, now=now):
        preview.refresh_from_db()
        return StopOutcome.ALREADY_STOPPED if preview.state == State.STOPPED else StopOutcome.BUSY

    preview_engine = engine(preview.engine)
    failures: list[EngineError] = []
    still_running: list[Container] = []
    try:
        for container in preview_engine.containers(_labels(session)):
            if not container.is_running or (reason != StopReason.MANUAL and container.is_kept):
                continue
            try:
                preview_engine.stop(container.id)
            except EngineError as exc:
                failures.append(exc)
        # Believe the engine, not our calls: only what it lists as running still runs.
        still_running = [c for c in preview_engine.containers(_labels(session)) if c.is_running]
    except EngineError as exc:
        failures.append(exc)

    errors = "; ".join(str(failure) for failure in failures)
    if not failures and not still_running:
        _transition(
            preview,
            from_states=[State.STOPPING],
            to=State.STOPPED,
            now=now,
            stopped_at=now,
            last_stop_reason=reason,
            last_stop_detail=detail,
            last_error="",
        )
        return StopOutcome.STOPPED
    was_failed = previous_state == State.FAILED
    back_to = State.FAILED if was_failed and not still_running else State.RUNNING
    _transition(preview, from_states=[State.STOPPING], to=back_to, now=now, last_error=errors)
    if failures:
        raise EngineError(
            f"could not stop the preview of {session}: {errors}",
            permanent=all(failure.permanent for failure in failures),
        )
    return StopOutcome.KEPT


def preview_reconcile(
    preview: Preview, containers: list[Container], *, now: datetime | None = None
) -> Preview:
    """Make the stored state agree with the containers the engine listed.

    A preview whose containers all exited is stopped (reason EXITED); one whose container
    runs although we thought it stopped is running; a start or stop interrupted for longer
    than TRANSITION_STALE_AFTER is settled by what the engine shows.
    """
    now = now or timezone.now()
    running = any(container.is_running for container in containers)
    stale = now - preview.state_changed_at > TRANSITION_STALE_AFTER
    settle = functools.partial(_transition, preview, now=now, unchanged_since_read=True)
    if running:
        moved_from = [State.STOPPED, State.FAILED] + (
            [State.STOPPING, State.STARTING] if stale else []
        )
        settle(from_states=moved_from, to=State.RUNNING)
        return preview
    if stale and preview.state == State.STARTING:
        settle(
            from_states=[State.STARTING],
            to=State.FAILED,
            stopped_at=now,
            last_stop_reason=StopReason.FAILED_START,
            last_stop_detail="the start was interrupted",
        )
        return preview
    # A failed start with nothing running is simply stopped; its reason stays "failed_start".
    settle(from_states=[State.FAILED], to=State.STOPPED)
    settle(
        from_states=[State.RUNNING] + ([State.STOPPING] if stale else []),
        to=State.STOPPED,
        stopped_at=now,
        last_stop_reason=StopReason.EXITED,
        last_stop_detail="the containers exited on their own",
        last_error="",
    )
    return preview


def preview_status(*, session: ChatSession, now: datetime | None = None) -> PreviewStatus:
    """The preview and its containers as the engine sees them now (the row is reconciled)."""
    preview = _preview_for(session)
    containers = engine(preview.engine).containers(_labels(session))
    return PreviewStatus(preview_reconcile(preview, containers, now=now), containers)


def preview_request(*, session: ChatSession, action: str, actor: str = "") -> PreviewStatus:
    """Do what a person asked of the preview (open, status or stop) and return its status.

    A stop while the preview is starting is refused (409) rather than silently dropped.
    """
    if action == "open":
        preview_open(session=session)
    elif action == "stop":
        outcome = preview_stop(
            session=session, reason=StopReason.MANUAL, detail=f"stopped by {actor}"
        )
        if outcome == StopOutcome.BUSY:
            raise ApplicationError(
                "the preview is being started or stopped right now; try again in a moment",
                status=409,
            )
    elif action != "status":
        raise ValueError(f"unknown preview action {action!r}")
    return preview_status(session=session)
