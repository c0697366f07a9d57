"""One structured log format for web, worker and beat: logfmt lines (key=value).

    ts=2026-11-25T14:02:01.123Z level=INFO component=worker logger=cleanup.stops
    task_id=3f2c... session=proj-1/sess-1 msg="stop proj-1/sess-1: stopped (stopped)"

`component` is set once per process (web by default; the Celery signals set worker or
beat), `task_id` and `session` while a task runs; a record's own `session` extra wins.
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime

_component = "web"
_task: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "log_task", default=()
)


def bind_component(name: str) -> None:
    global _component
    _component = name


def bind_task(*, task_id: str, queue: str = "", session: str | None = None) -> None:
    """Every line the task logs names it, the queue it came from and its session."""
    fields = (("task_id", task_id), ("queue", queue), ("session", session))
    _task.set(tuple((key, value) for key, value in fields if value))


def unbind_task() -> None:
    _task.set(())


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(char in text for char in ' "=\n'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": _component,
            "logger": record.name,
            **dict(_task.get()),
        }
        for key in ("session", "run"):
            if hasattr(record, key):
                fields[key] = getattr(record, key)
        fields["msg"] = record.getMessage()
        line = " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info))
        return line
