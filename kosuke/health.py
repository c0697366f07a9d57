"""Liveness and readiness: `/healthz` (the process answers) and `/readyz` (PostgreSQL and
Redis answer, and the workers' latest report on the Docker engine is fresh and good).

Served by a middleware placed first, so load balancers and compose reach them whatever the
Host header and without an HTTPS redirect.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from cleanup.control import pause_state
from kosuke.redis_client import redis_client
from previews.engine import EngineError, engine
from previews.engines import engines


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    redis_client().ping()


logger = logging.getLogger(__name__)
ENGINE_REPORTS_KEY = "kosuke:engine-reports"


def engine_reports_record(
    *, reached: list[str], unreachable: dict[str, str], running: dict[str, int] | None = None
) -> None:
    """Record what a worker saw of each engine, by name (when it starts, and at every
    sweep's list calls, with the preview containers `running` there): only an engine's
    workers reach it, so the web process answers /readyz, placement and the statistics
    from these."""
    now = time.time()
    running = running or {}
    reports = {
        name: {"ok": True, "error": "", "at": now, "running": running.get(name)} for name in reached
    }
    reports |= {
        name: {"ok": False, "error": error, "at": now} for name, error in unreachable.items()
    }
    if not reports:
        return
    with redis_client().pipeline() as pipe:
        pipe.hset(ENGINE_REPORTS_KEY, mapping={name: json.dumps(r) for name, r in reports.items()})
        pipe.expire(ENGINE_REPORTS_KEY, 24 * 3600)
        pipe.execute()


def engines_report_now(names: list[str]) -> None:
    """Ping the engines `names` and record the outcome (a worker, when it becomes ready)."""
    reached, unreachable = [], {}
    for name in names:
        try:
            engine(name).ping()
            reached.append(name)
        except EngineError as exc:
            unreachable[name] = str(exc)
    engine_reports_record(reached=reached, unreachable=unreachable)


def engine_report_max_age() -> float:
    """How old the latest report may be: every sweep reports, and a hung engine (or one
    whose workers are all gone) makes the sweep's list call fail after
    DOCKER_TIMEOUT_SECONDS. So /readyz says "down" within two intervals plus that timeout
    of the engine going down or hanging, or of its workers or beat stopping."""
    return 2 * settings.CLEANUP_INTERVAL_SECONDS + settings.DOCKER_TIMEOUT_SECONDS


def engine_reports() -> dict[str, dict]:
    """The latest report on each engine: {name: {"ok", "error", "at", "running"}}."""
    reports = redis_client().hgetall(ENGINE_REPORTS_KEY)
    return {name: json.loads(report) for name, report in reports.items()}


def engine_report_fresh(report: dict) -> bool:
    """Whether a worker's report on an engine is recent enough to go by."""
    return "at" in report and time.time() - report["at"] <= engine_report_max_age()


def engine_up(report: dict | None) -> bool:
    """Whether a fresh report says the engine (and a worker of it) answers."""
    return bool(report and engine_report_fresh(report) and report.get("ok"))


def engines_state() -> dict[str, str]:
    """Each configured engine in a word or a sentence: "up", or why it is not."""
    reports = engine_reports()
    states = {}
    for name in engines():
        report = reports.get(name)
        if engine_up(report):
            states[name] = "up"
        elif report and engine_report_fresh(report):
            states[name] = f"down: {report['error']}"
        else:
            max_age = engine_report_max_age()
            states[name] = f"down: no worker reported on it in {max_age:.0f} s"
    return states


def _docker() -> dict:
    """Ready while at least one engine is up (new previews go there); each engine's state
    is listed, so an engine whose workers are all down shows."""
    states = engines_state()
    if "up" not in states.values():
        raise RuntimeError("; ".join(f"engine {name} {state}" for name, state in states.items()))
    return {"engines": states}


BEAT_HEARTBEAT_KEY = "kosuke:beat:last-sent"


def beat_heartbeat() -> None:
    """Called by beat each time it sends a scheduled task."""
    redis_client().set(BEAT_HEARTBEAT_KEY, time.time(), ex=24 * 3600)


def beat_silent_for() -> float | None:
    """Seconds since beat last sent a task, or None if it never did (in the last day)."""
    sent = redis_client().get(BEAT_HEARTBEAT_KEY)
    return None if sent is None else time.time() - float(sent)


# Each check raises if it fails; it may return details to show beside its result.
CHECKS: dict[str, Callable[[], dict | None]] = {
    "database": _database,
    "redis": _redis,
    "docker": _docker,
}


def readiness() -> tuple[bool, dict[str, dict]]:
    """Run every check; returns whether all passed and, per check, its result and time."""
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            results[name] = {"ok": True, **(check() or {})}
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return all(result["ok"] for result in results.values()), results


def _cleanup_paused() -> str | None:
    """Whether scheduled cleanup is paused, in words (shown, never a reason to fail)."""
    try:
        pause = pause_state()
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"
    return pause.describe() if pause else None


def readyz() -> JsonResponse:
    ready, checks = readiness()
    down = [name for name, result in checks.items() if not result["ok"]]
    body = {
        "status": "ready" if ready else "unavailable",
        "down": down,
        "checks": checks,
        "cleanup_paused": _cleanup_paused() if checks["database"]["ok"] else None,
    }
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        # Not an error of this request (start-up polls, a store away): one warning line
        # naming what is down, instead of Django's ERROR "Service Unavailable".
        logger.warning("not ready: %s down", ", ".join(down))
        response._has_been_logged = True
    return response


class HealthMiddleware:
    """Sync and async: under ASGI a sync-only middleware would send every request through
    a thread and back."""

    sync_capable = async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if iscoroutinefunction(self):
            return self._acall(request)
        check = _health_check(request)
        return check() if check else self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        check = _health_check(request)
        if check:
            return await sync_to_async(check)()  # /readyz waits on PostgreSQL and Redis
        return await self.get_response(request)


def _healthz() -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _health_check(request: HttpRequest) -> Callable[[], JsonResponse] | None:
    if request.method not in ("GET", "HEAD"):
        return None
    return {"/healthz": _healthz, "/readyz": readyz}.get(request.path)
