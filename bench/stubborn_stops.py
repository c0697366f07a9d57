"""Idle previews whose containers ignore SIGTERM, stopped by the run command's own workers.

Every such stop takes the whole stop timeout, so how many run at once decides how long
a sweep's stops take. This starts the `worker` and `engine` processes exactly as the
Procfile (./scripts/run) starts them, with its default settings, opens N previews on the
real Docker engine, makes them idle, sends the sweep beat would send, and prints the
seconds from the sweep's start until the database says every preview is stopped (and
the engine agrees), plus the most database connections open at once meanwhile.

Run: DOCKER_HOST=... LOG_LEVEL=WARNING uv run python bench/stubborn_stops.py
     [--previews 100] [--stop-timeout 10]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from harness import django_ready, previews_open, procfile_start

WORKERS = ("worker", "engine")  # the Procfile's processes that serve the sweep and the engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previews", type=int, default=100, help="idle previews to stop")
    parser.add_argument("--stop-timeout", type=int, default=10, help="PREVIEW_STOP_TIMEOUT_SECONDS")
    args = parser.parse_args()
    os.environ["PREVIEW_STOP_TIMEOUT_SECONDS"] = str(args.stop_timeout)

    django_ready(redis=True)
    from datetime import timedelta

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from chat.models import ChatSession
    from cleanup.models import CleanupRun
    from cleanup.tasks import sweep_task
    from previews.engine import deployment_labels, engine
    from previews.models import Preview, PreviewState
    from tests.preview_image import IGNORE_SIGTERM, preview_image_build

    docker = engine()
    image = preview_image_build(
        docker.client, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    settings.PREVIEW_IMAGE = os.environ["PREVIEW_IMAGE"] = image
    previews_open(args.previews)
    ChatSession.objects.update(last_activity_at=timezone.now() - timedelta(hours=2))

    logs = Path(tempfile.mkdtemp(prefix="kosuke-bench-"))
    variables = {"ENGINE_CONCURRENCY": str(settings.ENGINE_CONCURRENCY), "KOSUKE_ENGINE": "local"}
    processes = [procfile_start(name, logs, **variables) for name in WORKERS]
    peak = [0]
    done = threading.Event()

    def connections_sample() -> None:
        # The bench's own connection is not counted.
        with connection.cursor() as cursor:
            while not done.wait(0.05):
                cursor.execute(
                    "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"
                )
                peak[0] = max(peak[0], cursor.fetchone()[0])

    try:
        time.sleep(8)  # both workers up and consuming
        sampler = threading.Thread(target=connections_sample)
        sweep_task.apply_async()
        sampler.start()
        deadline = time.monotonic() + 60 + 10 * args.stop_timeout
        while Preview.objects.exclude(state=PreviewState.STOPPED).exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"not every preview stopped in time; logs in {logs}")
            time.sleep(0.05)
        done.set()
        sampler.join()
        run = CleanupRun.objects.get()  # the one sweep sent
        last_stop = Preview.objects.latest("stopped_at").stopped_at
        running = sum(c.is_running for c in docker.containers(deployment_labels()))
    finally:
        done.set()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
        for container in docker.containers(deployment_labels()):
            docker.remove(container.id)

    print(
        f"{args.previews} idle previews on {docker.url}, containers ignore SIGTERM, stop "
        f"timeout {args.stop_timeout} s; the Procfile's worker and engine processes "
        f"(ENGINE_CONCURRENCY={settings.ENGINE_CONCURRENCY}, "
        f"DATABASE_POOL_MAX_SIZE={settings.DATABASE_POOL_MAX_SIZE}); logs in {logs}"
    )
    print(f"stops handed out by the sweep:           {run.decisions.count()}")
    took = (last_stop - run.started_at).total_seconds()
    print(f"sweep start to last preview stopped:     {took:.1f} s")
    print(f"containers still running:                {running}")
    print(f"database connections open at once (max): {peak[0]}")


if __name__ == "__main__":
    main()
