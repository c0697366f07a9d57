"""Open, stop and inspect the preview of a chat session on its Docker engine.

The database holds what we last knew; the engine is the truth about containers. Each
action claims the preview with a conditional UPDATE first (previews.lifecycle), so two
opens cannot create two sets of containers and two stops cannot race.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from chat.models import ChatSession
from chat.services import activity_record
from cleanup.metrics import metrics_preview_started
from kosuke.errors import ApplicationError
from previews.engine import Container, EngineError, engine
from previews.engines import default_engine_name
from previews.lifecycle import (
    StopOutcome,
    preview_claim_stop,
    preview_containers_running,
    preview_labels_of,
    preview_release,
    preview_stop_claimed,
    start_claimed,
)
from previews.models import Preview, PreviewState, StopReason
from previews.reconcile import preview_reconcile


class PreviewAction(enum.StrEnum):
    """What a person may ask of a preview (the API and the admin)."""

    OPEN = "open"
    STATUS = "status"
    STOP = "stop"


@dataclass(frozen=True)
class PreviewStatus:
    preview: Preview
    containers: list[Container]

    @property
    def is_kept(self) -> bool:
        """Every running container is labelled kosuke.keep=true: no rule stops it."""
        running = [container for container in self.containers if container.is_running]
        return bool(running) and all(container.is_kept for container in running)


def preview_row(session: ChatSession, *, engine: str | None = None) -> Preview:
    """The session's preview, created stopped if it has none. One whose containers no
    engine holds is recorded on `engine` (default: the first configured) when given one."""
    engine = default_engine_name() if engine is None else engine
    preview, _created = Preview.objects.get_or_create(session=session, defaults={"engine": engine})
    if not preview.engine and engine:
        Preview.objects.filter(pk=preview.pk, engine="").update(engine=engine)
        preview.refresh_from_db(fields=["engine"])
    return preview


def container_name(session: ChatSession) -> str:
    """Unique per engine and session, so racing creates meet at the engine as well."""
    return f"kosuke-preview-{settings.PREVIEW_MANAGED_BY}-{session.pk}"


def preview_open(
    *, session: ChatSession, engine_name: str | None = None, now: datetime | None = None
) -> Preview:
    """Make the session's preview run: create its container, or start the stopped one again.

    Opening counts as activity, so a reopened preview gets a fresh idle period. When
    another request is already starting it, this returns its state without touching the
    engine; while it is being stopped, the open is refused (409) rather than lost.
    """
    now = now or timezone.now()
    activity_record(session=session, now=now)
    preview = preview_row(session, engine=engine_name)
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

    created = False

    def to_start() -> list[str]:
        nonlocal created
        preview_engine = engine(preview.engine)
        containers = preview_engine.containers(preview_labels_of(session))
        if containers:
            return [container.id for container in containers if not container.is_running]
        created = True
        return [
            preview_engine.create(
                name=container_name(session),
                labels=preview_labels_of(session),
                environment={
                    "KOSUKE_PROJECT_ID": session.project_id,
                    "KOSUKE_SESSION_ID": session.session_id,
                },
            )
        ]

    start_claimed(
        preview,
        to_start,
        now=now,
        started_at=preview.started_at if was_running and preview.started_at else now,
        start_detail=preview.start_detail if was_running else "opened",
    )
    if not was_running:
        metrics_preview_started(preview.engine, created=created)
    return preview


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


def preview_status(
    *, session: ChatSession, engine_name: str | None = None, now: datetime | None = None
) -> PreviewStatus:
    """The preview and its containers as the engine sees them now (the row is reconciled)."""
    preview = preview_row(session, engine=engine_name)
    containers = (
        engine(preview.engine).containers(preview_labels_of(session)) if preview.engine else []
    )
    return PreviewStatus(preview_reconcile(preview, containers, now=now), containers)


def preview_act(
    *, session: ChatSession, action: PreviewAction, actor: str = "", engine: str | None = None
) -> PreviewStatus:
    """Do what a person asked of the preview and return its status; one not placed yet
    goes to `engine` (default: the first configured).

    A stop while the preview is starting is refused (409) rather than silently dropped.
    """
    if action == PreviewAction.OPEN:
        preview_open(session=session, engine_name=engine)
    elif action == PreviewAction.STOP:
        outcome = preview_stop(
            session=session, reason=StopReason.MANUAL, detail=f"stopped by {actor}"
        )
        if outcome == StopOutcome.BUSY:
            raise ApplicationError(
                "the preview is being started or stopped right now; try again in a moment",
                status=409,
            )
    # Only an open places a preview: a status or a stop read just before a removal after
    # the retention must not pin its old engine again.
    return preview_status(
        session=session, engine_name=engine if action == PreviewAction.OPEN else ""
    )
