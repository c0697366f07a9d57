"""Liveness and readiness: `/healthz` (the process answers) and `/readyz` (PostgreSQL,
Redis and the Docker engine each answer). Served by a middleware placed first, so load
balancers and compose reach them whatever the Host header and without an HTTPS redirect.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from kosuke.redis_client import redis_client
from previews.tasks import engine_ping_remote

DOCKER_CHECK_TIMEOUT_SECONDS = 5


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    redis_client().ping()


def _docker() -> None:
    # Asked of a worker: only workers reach the engine (in compose they alone mount it).
    engine_ping_remote(timeout=DOCKER_CHECK_TIMEOUT_SECONDS)


BEAT_HEARTBEAT_KEY = "kosuke:beat:last-sent"


def beat_heartbeat() -> None:
    """Called by beat each time it sends a scheduled task."""
    redis_client().set(BEAT_HEARTBEAT_KEY, time.time(), ex=24 * 3600)


def beat_silent_for() -> float | None:
    """Seconds since beat last sent a task, or None if it never did (in the last day)."""
    sent = redis_client().get(BEAT_HEARTBEAT_KEY)
    return None if sent is None else time.time() - float(sent)


CHECKS: dict[str, Callable[[], None]] = {"database": _database, "redis": _redis, "docker": _docker}


def readiness() -> tuple[bool, dict[str, dict]]:
    """Run every check; returns whether all passed and, per check, its result and time."""
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            results[name] = {"ok": True}
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return all(result["ok"] for result in results.values()), results


def readyz() -> JsonResponse:
    ready, checks = readiness()
    down = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "ready" if ready else "unavailable", "down": down, "checks": checks}
    return JsonResponse(body, status=200 if ready else 503)


class HealthMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            if request.path == "/healthz":
                return JsonResponse({"status": "ok"})
            if request.path == "/readyz":
                return readyz()
        return self.get_response(request)
