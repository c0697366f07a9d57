"""Request and response bodies of the chat API.

Inputs refuse unknown fields, and strings and numbers are not coerced from other types,
so a client mistake is an error that names the field rather than a silent guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from django.utils import timezone
from ninja import Path, Schema
from pydantic import (
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
)

from chat.models import IDENTIFIER_PATTERN, IDLE_TIMEOUT_MAX_MINUTES, ChatSession

if TYPE_CHECKING:
    from chat.presence import Presence
    from cleanup.decisions import StopDue

# PostgreSQL text cannot hold NUL characters: refuse them here rather than fail at the write.
NO_NUL = r"^[^\x00]*$"
Identifier = Annotated[StrictStr, Field(pattern=IDENTIFIER_PATTERN)]
# A project or session id in a URL: anything else is refused before it reaches a query.
PathId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
# A time with its offset; how far back or ahead is the services' call (chat.services).
Moment = AwareDatetime
Title = Annotated[StrictStr, Field(max_length=200, pattern=NO_NUL)]


def _integral(value: object) -> object:
    # JSON has one number type: 30.0 is the integer 30 (but "30" stays a string).
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole_number(*, ge: int, le: int) -> type:
    """An integer from `ge` to `le`, strictly (JSON's 30.0 is 30, but "30" is refused)."""
    return Annotated[Annotated[StrictInt, Field(ge=ge, le=le)], BeforeValidator(_integral)]


IdleTimeout = whole_number(ge=1, le=IDLE_TIMEOUT_MAX_MINUTES)
MESSAGE_MAX_CHARS = 100_000


class Input(Schema):
    model_config = ConfigDict(extra="forbid")


class SessionCreateIn(Input):
    title: Title = ""
    session_id: Identifier | None = None


class SessionUpdateIn(Input):
    """Only the fields sent are changed; null clears the timeout override or keep-alive."""

    title: Title = ""
    idle_timeout_minutes: IdleTimeout | None = None
    busy_until: Moment | None = None
    last_activity_at: Moment = Field(
        default=None, description="Report activity at this past time instead of now."
    )


class MessageIn(Input):
    content: Annotated[StrictStr, Field(min_length=1, max_length=MESSAGE_MAX_CHARS, pattern=NO_NUL)]
    role: Literal["user", "assistant", "system"] = "user"


class HeartbeatIn(Input):
    client_id: Identifier


class SessionOut(Schema):
    project_id: str
    session_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    activity_level: str
    idle_timeout_minutes: int | None
    busy_until: datetime | None

    @staticmethod
    def resolve_activity_level(session: ChatSession) -> str:
        return session.activity_level(timezone.now())


class MessageOut(Schema):
    id: int
    role: str
    content: str
    created_at: datetime


class StopDueOut(Schema):
    """When the preview stops if nothing happens and a viewer keeps watching, and why; all
    null when it does not stop by itself (README: "For the frontend: when a preview stops")."""

    stops_at: datetime | None
    stops_because: str | None  # "after 30 min without activity (threshold 30 min)"
    stops_reason: str | None  # its code: "inactive" (activity moves it) or "max_age"

    @staticmethod
    def fields_of(due: StopDue | None) -> dict[str, Any]:
        if due is None:
            return {"stops_at": None, "stops_because": None, "stops_reason": None}
        return {
            "stops_at": due.at,
            "stops_because": due.because,
            "stops_reason": due.stop_reason.value,
        }


class PresenceOut(StopDueOut):
    viewers: int
    last_seen_at: datetime | None

    @staticmethod
    def of(presence: Presence, due: StopDue | None) -> PresenceOut:
        return PresenceOut(
            viewers=presence.viewers,
            last_seen_at=presence.last_seen_at,
            **StopDueOut.fields_of(due),
        )
