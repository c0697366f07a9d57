"""Request and response bodies of the chat API.

Inputs refuse unknown fields, and strings and numbers are not coerced from other types,
so a client mistake is an error that names the field rather than a silent guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from django.utils import timezone
from ninja import Path, Schema
from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, StrictInt, StrictStr

from chat.models import IDENTIFIER_PATTERN, IDLE_TIMEOUT_MAX_MINUTES, ChatSession, activity_level

# PostgreSQL text cannot hold NUL characters: refuse them here rather than fail at the write.
NO_NUL = r"^[^\x00]*$"
Identifier = Annotated[StrictStr, Field(pattern=IDENTIFIER_PATTERN)]
# A project or session id in a URL: anything else is refused before it reaches a query.
PathId = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _plausible(moment: datetime) -> datetime:
    # PostgreSQL accepts dates it cannot hand back to Python (year 1 in another time zone
    # becomes 1 BC); nothing in this service happened before 2000 anyway.
    if moment.year < EARLIEST.year or moment < EARLIEST:
        raise ValueError(f"must not be before {EARLIEST:%Y-%m-%d}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-23:59 is past the last representable moment
        raise ValueError("is too far in the future") from None


Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]
Title = Annotated[StrictStr, Field(max_length=200, pattern=NO_NUL)]
IdleTimeout = Annotated[StrictInt, Field(ge=1, le=IDLE_TIMEOUT_MAX_MINUTES)]
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
        return activity_level(timezone.now() - session.last_activity_at)


class MessageOut(Schema):
    id: int
    role: str
    content: str
    created_at: datetime


class PresenceOut(Schema):
    viewers: int
    last_seen_at: datetime | None
