"""Time to open, stop and reopen one preview on the local Docker engine (median of N runs).

Run: DOCKER_HOST=... uv run python bench/preview_lifecycle.py [--runs N]
Starts a throwaway PostgreSQL (unless DATABASE_URL is set), builds the busybox test image
(unless PREVIEW_IMAGE is set), and times the service functions end to end, including the
database work and the engine's confirmation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from harness import django_ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="open/stop/reopen cycles")
    args = parser.parse_args()

    django_ready()
    from django.conf import settings
    from django.contrib.auth.models import User

    from chat.models import ChatSession
    from previews.engine import engine
    from previews.models import StopReason
    from previews.services import preview_open, preview_stop

    docker_client = engine().client
    if not os.environ.get("PREVIEW_IMAGE"):
        from tests.preview_image import preview_image_build

        settings.PREVIEW_IMAGE = preview_image_build(docker_client)
    owner, _ = User.objects.get_or_create(username="bench")

    timings: dict[str, list[float]] = {"open (create + start)": [], "stop": [], "reopen": []}
    for run in range(args.runs):
        session = ChatSession.objects.create(
            owner=owner, project_id="bench", session_id=f"run-{run}-{time.time_ns()}"
        )
        steps = (
            ("open (create + start)", preview_open, {}),
            ("stop", preview_stop, {"reason": StopReason.MANUAL}),
            ("reopen", preview_open, {}),
        )
        for label, step, options in steps:
            started = time.perf_counter()
            step(session=session, **options)
            timings[label].append(time.perf_counter() - started)
        for container in engine().containers({"kosuke.session_id": session.session_id}):
            engine().remove(container.id)

    print(f"engine {engine().url}, image {settings.PREVIEW_IMAGE}, {args.runs} runs")
    for label, values in timings.items():
        print(
            f"{label:24s} median {statistics.median(values) * 1000:7.1f} ms"
            f"   min {min(values) * 1000:7.1f}   max {max(values) * 1000:7.1f}"
        )


if __name__ == "__main__":
    main()
