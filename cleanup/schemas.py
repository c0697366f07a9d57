"""Request and response bodies of the operator API (strict, like the chat API's)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import AwareDatetime, ConfigDict, Field, StrictBool, StrictStr

from chat.models import IDLE_TIMEOUT_MAX_MINUTES
from chat.schemas import NO_NUL, whole_number
from cleanup.models import CleanupRun, StopDecision

Reason = Annotated[StrictStr, Field(max_length=500, pattern=NO_NUL)]
# How long `"wait": true` may hold the request: operators' proxies time out at minutes.
WAIT_MAX_SECONDS = 300


class Input(Schema):
    model_config = ConfigDict(extra="forbid")


class RunRequestIn(Input):
    dry_run: StrictBool = False
    threshold_minutes: whole_number(ge=1, le=IDLE_TIMEOUT_MAX_MINUTES) | None = None
    batch_size: whole_number(ge=1, le=10_000) | None = None
    # "PROJECT/SESSION": only this session's preview (with `owner` when ids are shared).
    session: Annotated[StrictStr, Field(max_length=129, pattern=NO_NUL)] | None = None
    owner: Annotated[StrictStr, Field(max_length=150, pattern=NO_NUL)] | None = None
    wait: StrictBool = False
    timeout_seconds: whole_number(ge=1, le=WAIT_MAX_SECONDS) = 60
    reason: Reason = ""


class ReasonIn(Input):
    reason: Reason = ""


class PauseIn(Input):
    reason: Reason = ""
    until: AwareDatetime | None = None


class PauseOut(Schema):
    paused: bool
    by: str | None = None
    reason: str = ""
    since: datetime | None = None
    until: datetime | None = None


class RunFilters(Schema):
    trigger: Literal[tuple(CleanupRun.Trigger.values)] | None = None  # type: ignore[valid-type]
    dry_run: bool | None = None
    # Runs with at least one decision of this outcome.
    outcome: Literal[tuple(StopDecision.Outcome.values)] | None = None  # type: ignore[valid-type]
    found_something: bool | None = None
    started_after: AwareDatetime | None = None
    started_before: AwareDatetime | None = None


class RunOut(Schema):
    id: int
    trigger: str
    dry_run: bool
    threshold_minutes: int
    batch_size: int
    started_at: datetime
    swept_at: datetime | None
    finished: bool = Field(alias="is_finished")
    finished_at: datetime | None
    examined: int
    found: int
    stopped: int
    skipped: int
    failed: int
    cancelled: int
    pending: int
    deferred: int
    undecided: int
    duration_ms: int | None
    paused: bool
    note: str
    cancelled_at: datetime | None
    retry_of: int | None = Field(alias="retry_of_id")


class DecisionOut(Schema):
    id: int
    project_id: str
    session_id: str
    stop_reason: str
    reason: str
    level: str
    outcome: str
    outcome_detail: str
    decided_at: datetime
    due_at: datetime | None
    began_at: datetime | None
    settled_at: datetime | None


class ActionOut(Schema):
    kind: str
    at: datetime
    actor: str = Field(alias="actor_name")
    run: int | None = Field(alias="run_number")
    reason: str
    until: datetime | None
    details: dict[str, Any]


class RunDetailOut(RunOut):
    errors: list[dict[str, str]]
    decisions: list[DecisionOut]
    actions: list[ActionOut]
    retries: list[int]

    @staticmethod
    def resolve_decisions(run: CleanupRun) -> list[StopDecision]:
        return list(run.decisions.order_by("pk"))

    @staticmethod
    def resolve_actions(run: CleanupRun) -> list:
        return list(run.actions.order_by("at", "pk"))

    @staticmethod
    def resolve_retries(run: CleanupRun) -> list[int]:
        return list(run.retries.order_by("pk").values_list("pk", flat=True))


class CancelOut(Schema):
    run: int
    cancelled: int
    under_way: int


class CronOut(Schema):
    run: int = Field(alias="pk")
    paused: bool
    note: str
