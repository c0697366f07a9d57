"""Sentry for every process: web, worker and beat. Nothing is sent without a DSN."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration


def sentry_init(*, dsn: str, environment: str, traces_sample_rate: float, **options: Any) -> None:
    """Start the SDK; beat's schedule becomes Sentry Crons monitors (one per entry)."""
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=True)],
        **options,
    )
    sentry_sdk.get_global_scope().set_tag("component", "web")


def sentry_component(name: str) -> None:
    """Tag every later event of this process: web, worker or beat."""
    sentry_sdk.get_global_scope().set_tag("component", name)


def sentry_task_context(*, task_id: str, queue: str, retries: int, session: str | None) -> None:
    """Tag the events of the running task (its own scope) with what an operator asks first."""
    scope = sentry_sdk.get_current_scope()
    scope.set_tag("task_id", task_id)
    scope.set_tag("queue", queue)
    scope.set_tag("retries", str(retries))
    if session:
        scope.set_tag("session", session)
        scope.set_context("session", {"session": session})
