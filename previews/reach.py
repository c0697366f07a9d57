"""How the sweep reaches the engines: through each engine's workers (queue
`engine.<name>`, the deployed way: the sweeps worker mounts no socket), or itself, in a
process that has them all (the management command, WORKER_ENABLED=false, tests).

Both list every engine at once and remove containers in batches, each engine's answer on
its own: one engine that fails, or whose workers are all down, never holds up the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from celery.exceptions import TimeoutError as ReplyTimeout
from celery.result import AsyncResult
from django.conf import settings
from django.utils import timezone

from previews.engine import Container, EngineError, deployment_labels, engine
from previews.lifecycle import preview_containers_remove
from previews.models import Preview


@dataclass(frozen=True)
class Removal:
    """Containers to remove from an engine: a preview's after the retention (`preview_pk`
    and when it was stopped, as read), or an orphan's (no preview)."""

    engine: str
    container_ids: list[str]
    preview_pk: int | None = None
    stopped_as_read: datetime | None = None

    def task_kwargs(self) -> dict:
        """As `previews.remove` takes it (JSON; `engine` routes it)."""
        as_read = self.stopped_as_read.isoformat() if self.stopped_as_read else None
        return {**asdict(self), "stopped_as_read": as_read}

    @classmethod
    def from_task_kwargs(cls, **kwargs) -> Removal:
        as_read = kwargs.pop("stopped_as_read", None)
        return cls(**kwargs, stopped_as_read=as_read and datetime.fromisoformat(as_read))


REMOVED, CHANGED = "removed", "reopened meanwhile: kept"


def removal_carry_out(removal: Removal) -> str:
    """Remove as asked: REMOVED, or CHANGED when the preview changed since it was read;
    EngineError when the engine failed."""
    if removal.preview_pk is None:
        for container_id in removal.container_ids:
            engine(removal.engine).remove(container_id)
        return REMOVED
    preview = Preview.objects.select_related("session").filter(pk=removal.preview_pk).first()
    if preview is None or preview.state_changed_at != removal.stopped_as_read:
        return CHANGED
    now = timezone.now()
    return (
        REMOVED if preview_containers_remove(preview, removal.container_ids, now=now) else CHANGED
    )


class EngineReach(Protocol):
    # Whether what it sees of the engines goes into their health reports (/readyz,
    # placement): not from a one-off command run where some engines' sockets are not.
    records_health: bool

    def list(self, names: list[str]) -> dict[str, list[Container] | EngineError]: ...

    def remove(self, removals: list[Removal]) -> list[str | EngineError]: ...


class EnginesDirect:
    """This process calls the engines itself."""

    def __init__(self, *, records_health: bool = True):
        self.records_health = records_health

    def list(self, names: list[str]) -> dict[str, list[Container] | EngineError]:
        listed: dict[str, list[Container] | EngineError] = {}
        for name in names:
            try:
                listed[name] = engine(name).containers(deployment_labels())
            except EngineError as exc:
                listed[name] = exc
        return listed

    def remove(self, removals: list[Removal]) -> list[str | EngineError]:
        outcomes: list[str | EngineError] = []
        for removal in removals:
            try:
                outcomes.append(removal_carry_out(removal))
            except EngineError as exc:
                outcomes.append(exc)
        return outcomes


class EnginesThroughWorkers:
    """Each engine's workers call it: every request is sent first, then the replies are
    gathered, all within one Docker call's time (a request no worker took by then
    expires, rather than being carried out late). The engines in `served_here` (the
    worker running the sweep consumes their queues too) are called directly: waiting on
    itself, a worker of one process would never get the reply."""

    records_health = True

    def __init__(self, served_here: Iterable[str] = ()):
        self.served_here = set(served_here)

    def list(self, names: list[str]) -> dict[str, list[Container] | EngineError]:
        from previews.tasks import engine_list_task

        here = [name for name in names if name in self.served_here]
        listed = EnginesDirect().list(here)
        sent = [(name, _send(engine_list_task, engine=name)) for name in names if name not in here]
        for (name, _), reply in zip(sent, _replies(sent), strict=True):
            if isinstance(reply, EngineError):
                listed[name] = reply
            else:
                containers = reply["containers"]
                listed[name] = [Container.from_json(data, engine=name) for data in containers]
        return {name: listed[name] for name in names}

    def remove(self, removals: list[Removal]) -> list[str | EngineError]:
        from previews.tasks import containers_remove_task

        sent = [
            (removal.engine, _send(containers_remove_task, **removal.task_kwargs()))
            for removal in removals
            if removal.engine not in self.served_here
        ]
        here = [removal for removal in removals if removal.engine in self.served_here]
        done_here, replies = iter(EnginesDirect().remove(here)), iter(_replies(sent))
        return [
            next(done_here) if removal.engine in self.served_here else _outcome(next(replies))
            for removal in removals
        ]


def _outcome(reply: dict | EngineError) -> str | EngineError:
    return reply if isinstance(reply, EngineError) else reply["outcome"]


def _wait_seconds() -> int:
    return settings.DOCKER_TIMEOUT_SECONDS + 5


def _send(task, **kwargs) -> AsyncResult:
    return task.apply_async(kwargs=kwargs, expires=_wait_seconds())


def _replies(sent: list[tuple[str, AsyncResult]]) -> list[dict | EngineError]:
    """Each task's reply, or the EngineError it reports (or that no worker answered)."""
    deadline = time.monotonic() + _wait_seconds()
    replies: list[dict | EngineError] = []
    for name, result in sent:
        try:
            wait = max(0.1, deadline - time.monotonic())
            reply = result.get(timeout=wait, disable_sync_subtasks=False)
        except ReplyTimeout:
            reply = {
                "error": f"no worker of engine {name} answered within {_wait_seconds()} s "
                f"(celery -A kosuke worker -Q engine.{name})"
            }
        finally:
            result.forget()
        replies.append(EngineError(reply["error"]) if "error" in reply else reply)
    return replies
