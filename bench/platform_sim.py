"""A simulated platform: many live previews over many engines and a long history. What one
sweep costs, and how long a wave of idle previews takes to hand out and to stop.

The engines are simulated, said so in the output: each is bench/fake_engine.py, a small
Docker API on a Unix socket whose stops take --stop-seconds (a container that ignores
SIGTERM takes the whole stop timeout), because no machine runs 100,000 containers.
Everything else is real: PostgreSQL, Redis, the sweep as the sweeps worker runs it (in
this process: each engine listed by its workers, each stop handed to Celery's broker
for its engine's queue), and the Procfile's `engine` worker, started --workers times,
each serving every engine's queue, listing the engines and carrying the stops out.

Run: LOG_LEVEL=WARNING uv run python bench/platform_sim.py [--live 100000] [--engines 50]
     [--history 1000000] [--stops 1000] [--stop-seconds 10] [--workers 8]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness import django_ready, history_add, live_previews_add, procfile_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=100_000, help="live previews")
    parser.add_argument("--engines", type=int, default=50, help="simulated engines")
    parser.add_argument("--history", type=int, default=1_000_000, help="stopped sessions")
    parser.add_argument("--stops", type=int, default=1000, help="previews made idle")
    parser.add_argument("--stop-seconds", type=float, default=10, help="each stop's time")
    parser.add_argument(
        "--workers", type=int, default=8, help="engine worker processes (each serving every engine)"
    )
    parser.add_argument("--sweeps", type=int, default=3, help="timed sweeps (median)")
    args = parser.parse_args()

    django_ready(redis=True)

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from fake_engine import FakeEngine

    from cleanup.models import CleanupRun
    from cleanup.sweep import sweep
    from previews.engine import engine_at
    from previews.reach import EnginesThroughWorkers

    sockets = Path(tempfile.mkdtemp(prefix="kosuke-bench-"))
    engines = [
        FakeEngine(sockets / f"engine-{n}.sock", stop_seconds=args.stop_seconds)
        for n in range(args.engines)
    ]
    names = [f"e{n}" for n in range(args.engines)]
    settings.PREVIEW_ENGINES = ",".join(
        f"{name}={fake.url}?capacity={args.live}" for name, fake in zip(names, engines, strict=True)
    )
    engine_at.cache_clear()
    owner, _ = User.objects.get_or_create(username="bench")
    began = time.perf_counter()
    history_add(owner.pk, args.history)
    per_engine = args.live // args.engines
    for n, fake in enumerate(engines):
        live_previews_add(fake, owner.pk, n * per_engine, (n + 1) * per_engine, names[n])
    connection.cursor().execute("ANALYZE")
    print(
        f"{args.history:,} sessions of history; {per_engine * args.engines:,} live previews "
        f"over {args.engines} engines SIMULATED by bench/fake_engine.py (a Docker API on a "
        f"Unix socket each, stops taking {args.stop_seconds:g} s); set up in "
        f"{time.perf_counter() - began:.0f} s"
    )

    def sweep_once(dispatch) -> tuple[float, int, CleanupRun]:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            run = sweep(
                trigger=CleanupRun.Trigger.BEAT, dispatch=dispatch, reach=EnginesThroughWorkers()
            )
            took = time.perf_counter() - started
        return took, len(queries), run

    def no_stop(decision, *, take_over=False) -> None:
        raise AssertionError("every preview is active")

    workers = _engine_workers(args.workers, settings.ENGINE_CONCURRENCY, names)
    try:
        timed = [sweep_once(no_stop) for _ in range(args.sweeps)]
        _, queries, run = sorted(timed, key=lambda t: t[0])[len(timed) // 2]
        if run.sweep_errors:
            raise SystemExit(f"the sweep failed: {run.sweep_errors[:3]}; logs in {workers[0]}")
        print(
            f"sweep, all active: {statistics.median(t[0] for t in timed):.2f} s (median of "
            f"{args.sweeps}), {queries} queries, {run.engine_list_calls} list calls (by the "
            f"engine workers), {run.examined:,} examined"
        )
        _stops_wave(args, per_engine, sweep_once, workers[0])
    finally:
        for process in workers[1]:
            process.terminate()
        for process in workers[1]:
            process.wait(60)
    for fake in engines:
        fake.close()


def _stops_wave(args, per_engine: int, sweep_once, logs: Path) -> None:
    """Make --stops previews idle, spread over every engine; sweep; wait until every stop
    settled."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from chat.models import ChatSession
    from cleanup.models import StopDecision
    from cleanup.tasks import stop_enqueue

    # Idle previews spread over every engine: every (live / stops)-th session.
    step = max(1, (per_engine * args.engines) // args.stops)
    live = ChatSession.objects.filter(project_id="live").order_by("pk")
    idle_pks = list(live.values_list("pk", flat=True)[::step][: args.stops])
    ChatSession.objects.filter(pk__in=idle_pks).update(
        last_activity_at=timezone.now() - timedelta(hours=2)
    )
    started = time.perf_counter()
    took, queries, run = sweep_once(stop_enqueue)
    pending = StopDecision.objects.filter(run=run, outcome=StopDecision.Outcome.PENDING)
    deadline = time.monotonic() + 60 + 20 * args.stop_seconds * args.stops / 100
    while pending.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{pending.count()} stops still pending; logs in {logs}")
        time.sleep(0.2)
    done = time.perf_counter() - started
    stopped = StopDecision.objects.filter(run=run, outcome=StopDecision.Outcome.STOPPED)
    print(
        f"sweep handing out {len(idle_pks):,} stops: {took:.2f} s, {queries} queries; "
        f"all carried out {done:.1f} s after it began ({stopped.count():,} stopped) by "
        f"{args.workers} engine worker process(es) x {settings.ENGINE_CONCURRENCY} threads, "
        f"each serving all {args.engines} engines (the Procfile's command); logs in {logs}"
    )


def _engine_workers(
    count: int, threads: int, names: list[str]
) -> tuple[Path, list[subprocess.Popen]]:
    """`count` engine workers as the Procfile starts one, each with a name of its own and
    serving the queues of every engine in `names`."""
    from django.conf import settings

    logs = Path(tempfile.mkdtemp(prefix="kosuke-bench-"))
    env = {
        "ENGINE_CONCURRENCY": str(threads),
        "DATABASE_POOL_MAX_SIZE": "8",
        "PREVIEW_ENGINES": settings.PREVIEW_ENGINES,
        "LOG_LEVEL": "WARNING",
    }
    queues = ",".join(f"engine.{name}" for name in names)
    processes = [
        procfile_start("engine", logs, as_name=f"engine-{n}", queues=queues, **env)
        for n in range(count)
    ]
    time.sleep(10)  # every worker up and consuming
    return logs, processes


if __name__ == "__main__":
    main()
