"""Response bodies of the preview API."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema

from chat.schemas import StopDueOut
from cleanup.decisions import preview_stop_due
from previews.engine import Container
from previews.services import PreviewStatus


class ContainerOut(Schema):
    id: str
    name: str
    state: str
    kept: bool

    @staticmethod
    def from_container(container: Container) -> ContainerOut:
        return ContainerOut(
            id=container.short_id,
            name=container.name,
            state=container.state,
            kept=container.is_kept,
        )


class PreviewOut(StopDueOut):
    state: str
    state_changed_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    last_stop_reason: str
    last_stop: str
    last_error: str
    containers: list[ContainerOut]

    @staticmethod
    def from_status(status: PreviewStatus) -> PreviewOut:
        """The preview as the API shows it; `last_stop*` and `stopped_at` stay once it runs
        again, so the answer to a reopening says why it had stopped."""
        preview = status.preview
        return PreviewOut(
            state=preview.state,
            state_changed_at=preview.state_changed_at,
            started_at=preview.started_at,
            stopped_at=preview.stopped_at,
            last_stop_reason=preview.last_stop_reason,
            last_stop=preview.last_stop_message(),
            last_error=preview.last_error,
            containers=[ContainerOut.from_container(c) for c in status.containers],
            **StopDueOut.fields_of(preview_stop_due(preview, kept=status.is_kept)),
        )
