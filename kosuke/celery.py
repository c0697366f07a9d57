"""The Celery app: configured from Django settings (CELERY_*), tasks found in the apps.

Run: celery -A kosuke worker -Q sweeps (the sweeps) |
     celery -A kosuke worker -Q engine.<name> -P threads -c $ENGINE_CONCURRENCY (all the
       work on engine <name>, next to it) |
     celery -A kosuke worker (every queue, for a single machine) |
     celery -A kosuke beat
     celery -A kosuke flower
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kosuke.settings")


def _command_component() -> str | None:
    """`worker`, `beat` or `flower` when this process is `celery -A kosuke <that>`: bound
    as the log component at import, so that lines logged before Celery's signals fire
    (beat's first, all of Flower's) say which process they come from."""
    program = sys.argv[0]
    if os.path.basename(program) != "celery" and not program.endswith("celery/__main__.py"):
        return None
    return next((word for word in sys.argv[1:] if word in ("worker", "beat", "flower")), None)


app = Celery("kosuke")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
if (_early := _command_component()) is not None:
    from kosuke.logs import bind_component

    bind_component(_early)


def _component(name: str) -> None:
    from kosuke.logs import bind_component
    from kosuke.sentry import sentry_component

    bind_component(name)
    sentry_component(name)


def _database_pool_off() -> None:
    """Beat and prefork workers open a connection per task instead: a pool's connections
    and threads do not survive prefork's fork, and no such task is hot enough to need one."""
    from django.conf import settings

    settings.DATABASES["default"]["OPTIONS"].pop("pool", None)


@signals.celeryd_init.connect
def _worker_init(options: dict | None = None, conf: Any = None, **_: Any) -> None:
    # A worker of threads (an engine's worker: tens of stops waiting on Docker at once)
    # shares DATABASE_POOL_MAX_SIZE connections among them; a stop gives its connection
    # back while Docker works (previews.lifecycle).
    if not runs_on_threads(options or {}, conf):
        _database_pool_off()
    _component("worker")


def runs_on_threads(options: dict, conf: Any) -> bool:
    """Whether the worker being started runs its tasks on threads (`-P threads`)."""
    from celery.concurrency import get_implementation

    # -P arrives as `pool` (a class); a worker started from code may say `pool_cls`.
    pool = options.get("pool") or options.get("pool_cls") or getattr(conf, "worker_pool", None)
    return get_implementation(pool or "prefork") is get_implementation("threads")


def route_to_engine(
    name: str, args: Any, kwargs: dict | None, options: dict, task: Any = None, **_: Any
) -> dict | None:
    """A task called with `engine=<name>` runs on that engine's workers (queue
    `engine.<name>`): they alone reach it. Others go to their default queue."""
    from previews.engines import engine_queue

    engine = (kwargs or {}).get("engine")
    return {"queue": engine_queue(engine)} if engine else None


def engines_served(queue_names: Any) -> list[str]:
    """The engines whose queues a worker consumes, from its queue names."""
    from previews.engines import QUEUE_PREFIX

    return [name[len(QUEUE_PREFIX) :] for name in queue_names if name.startswith(QUEUE_PREFIX)]


def engines_served_here() -> list[str]:
    """The engines whose queues this worker process consumes (-Q selects some in
    consume_from; without it, it consumes all)."""
    queues = app.amqp.queues
    return engines_served(queues.consume_from or queues)


@signals.worker_ready.connect
def _worker_ready(**_: Any) -> None:
    from kosuke.health import engines_report_now

    engines_report_now(engines_served_here())


_in_beat = False


@signals.beat_init.connect
def _beat_init(**_: Any) -> None:
    global _in_beat
    _in_beat = True
    _database_pool_off()
    _component("beat")


@signals.before_task_publish.connect
def _beat_heartbeat(**_: Any) -> None:
    # Beat's health check (manage.py healthcheck beat) reads when beat last sent a task.
    if _in_beat:
        from kosuke.health import beat_heartbeat

        beat_heartbeat()


@signals.task_prerun.connect
def _task_context(task_id: str, task: Any, kwargs: dict | None = None, **_: Any) -> None:
    from kosuke.logs import bind_task
    from kosuke.sentry import sentry_task_context

    session = (kwargs or {}).get("session")
    delivery = task.request.delivery_info or {}
    queue = delivery.get("routing_key") or task.request.get("queue") or ""
    bind_task(task_id=task_id, queue=queue, session=session)
    sentry_task_context(task_id=task_id, queue=queue, retries=task.request.retries, session=session)


@signals.task_postrun.connect
def _task_context_end(**_: Any) -> None:
    from kosuke.logs import unbind_task

    unbind_task()
