"""Health of one process kind, for container health checks and operators."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kosuke.health import beat_silent_for, readiness


class Command(BaseCommand):
    help = (
        "Exit 0 when healthy, 1 with one line saying what is wrong. 'web': PostgreSQL, "
        "Redis and the Docker engine answer (what /readyz reports). 'beat': beat sent a "
        "scheduled task within three sweep intervals. Workers: use "
        "'celery -A kosuke inspect ping -d celery@$HOSTNAME'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("component", choices=["web", "beat"], help="what to check")

    def handle(self, *args: Any, component: str, **options: Any) -> None:
        if component == "web":
            ready, checks = readiness()
            for name, result in checks.items():
                state = "ok" if result["ok"] else f"DOWN {result['error']}"
                self.stdout.write(f"{name}: {state} ({result['ms']} ms)")
            if not ready:
                down = ", ".join(name for name, result in checks.items() if not result["ok"])
                raise CommandError(f"not ready: {down} down")
            return
        allowed = 3 * settings.CLEANUP_INTERVAL_SECONDS
        silent_for = beat_silent_for()
        if silent_for is None or silent_for > allowed:
            seen = "never" if silent_for is None else f"{silent_for:.0f} s ago"
            raise CommandError(f"beat last sent a task {seen} (allowed: {allowed} s)")
        self.stdout.write(f"beat: ok (last sent a task {silent_for:.0f} s ago)")
