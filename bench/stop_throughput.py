"""How fast idle previews are stopped on a real Docker engine: the project's pipeline
against the source design's plain sequential loop, measured in the same run.

Run: DOCKER_HOST=... LOG_LEVEL=WARNING uv run python bench/stop_throughput.py
     [--previews 100] [--rounds 2] [--concurrency 8]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set), builds
the busybox test image, opens the previews once, then each round makes all of them
running and idle and times, until every container has stopped:
- plain loop: the source design's cleanup (one query for the idle sessions; per session:
  read it again, list its containers by label, stop each), Docker SDK calls only;
- sweep, command: `python manage.py cleanup_previews` (sweep, then the stops in this
  process, 4 at a time as by default);
- sweep, worker: the beat path (sweep task, stop tasks on an in-process Celery worker
  with N threads), until the database says every preview is stopped.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from harness import django_ready, previews_open


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previews", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads")
    args = parser.parse_args()

    django_ready(redis=True)
    from datetime import timedelta

    from celery.contrib.testing.worker import start_worker
    from django.conf import settings
    from django.utils import timezone

    from chat.models import ChatSession
    from cleanup.models import CleanupRun
    from cleanup.stops import stop_inline
    from cleanup.sweep import sweep
    from cleanup.tasks import sweep_task
    from kosuke.celery import app
    from previews.engine import deployment_labels, engine
    from previews.models import Preview, PreviewState
    from tests.preview_image import preview_image_build

    docker = engine()
    settings.PREVIEW_IMAGE = preview_image_build(docker.client)
    previews_open(args.previews)
    containers = docker.containers(deployment_labels())

    def all_running_and_idle() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: docker.start(c.id), containers))
        Preview.objects.update(
            state=PreviewState.RUNNING, state_changed_at=timezone.now(), claim_token=""
        )
        ChatSession.objects.update(last_activity_at=timezone.now() - timedelta(hours=2))
        CleanupRun.objects.all().delete()

    def still_running() -> int:
        return sum(c.is_running for c in docker.containers(deployment_labels()))

    def plain_loop() -> None:
        # The source design's cleanupInactiveSessions + stopIfInactive, one after another.
        client = docker.client.api
        cutoff = timezone.now() - timedelta(minutes=settings.CLEANUP_THRESHOLD_MINUTES)
        for session in ChatSession.objects.filter(last_activity_at__lt=cutoff):
            session = ChatSession.objects.get(pk=session.pk)
            if timezone.now() - session.last_activity_at < timedelta(minutes=30):
                continue
            labels = [f"kosuke.project_id={session.project_id}"]
            labels.append(f"kosuke.session_id={session.session_id}")
            for summary in client.containers(filters={"label": labels}):
                client.stop(summary["Id"], timeout=settings.PREVIEW_STOP_TIMEOUT_SECONDS)

    def sweep_inline() -> None:
        sweep(
            trigger=CleanupRun.Trigger.COMMAND,
            dispatch=stop_inline,
            batch_size=args.previews,
            concurrency=4,  # the command's default
        )

    def sweep_on_worker() -> None:
        sweep_task.delay(batch_size=args.previews).get(timeout=120)
        deadline = time.monotonic() + 300
        while Preview.objects.exclude(state=PreviewState.STOPPED).exists():
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not stop every preview within 300 s")
            time.sleep(0.02)

    methods = {
        "plain loop (source design)": plain_loop,
        "sweep, command (4 at a time)": sweep_inline,
        f"sweep, worker (-c {args.concurrency})": sweep_on_worker,
    }
    timings: dict[str, list[float]] = {name: [] for name in methods}
    with start_worker(
        app,
        pool="threads",
        concurrency=args.concurrency,
        queues=["sweeps", "engine.local"],
        perform_ping_check=False,
        shutdown_timeout=60,
    ):
        for _ in range(args.rounds):
            for name, method in methods.items():
                all_running_and_idle()
                started = time.perf_counter()
                method()
                timings[name].append(time.perf_counter() - started)
                if still_running():
                    raise SystemExit(f"{name}: {still_running()} container(s) still run")

    print(
        f"{args.previews} idle previews on the Docker engine at {docker.url}, "
        f"each one busybox container; {args.rounds} round(s), every method once per round"
    )
    print(f"{'method':<30} {'median s':>9} {'stops/s':>8}  all runs")
    for name, runs in timings.items():
        median = statistics.median(runs)
        every = " ".join(f"{run:.2f}" for run in runs)
        print(f"{name:<30} {median:>9.2f} {args.previews / median:>8.1f}  {every}")
    for container in containers:
        docker.remove(container.id)


if __name__ == "__main__":
    main()
