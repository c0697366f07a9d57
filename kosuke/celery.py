"""The Celery app: configured from Django settings (CELERY_*), tasks found in the apps.

Run: celery -A kosuke worker -Q sweeps,stops | celery -A kosuke beat | celery -A kosuke flower
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kosuke.settings")

app = Celery("kosuke")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.celeryd_init.connect
def _worker_init(**_: Any) -> None:
    from kosuke.sentry import sentry_component

    sentry_component("worker")


@signals.beat_init.connect
def _beat_init(**_: Any) -> None:
    from kosuke.sentry import sentry_component

    sentry_component("beat")


@signals.task_prerun.connect
def _task_context(task_id: str, task: Any, kwargs: dict | None = None, **_: Any) -> None:
    from kosuke.sentry import sentry_task_context

    delivery = task.request.delivery_info or {}
    sentry_task_context(
        task_id=task_id,
        queue=delivery.get("routing_key") or task.request.get("queue") or "",
        retries=task.request.retries,
        session=(kwargs or {}).get("session"),
    )
