"""What one sweep costs with many live previews and a long history: wall time, queries,
rows written and peak memory, for all-active, all-idle and dry-run sweeps.

Run: LOG_LEVEL=WARNING uv run python bench/sweep_cost.py [--live 1000 10000]
     [--history 100000] [--sweeps 3]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set). The
containers are simulated by bench/fake_engine.py, a small Docker API on a Unix socket
(no machine runs 10,000 containers); everything else is real: the sweep lists that
engine once, reconciles, decides, records, and in the idle case hands each stop to
Celery's Redis broker (no worker consumes them).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

from harness import django_ready, fake_engine_use, history_add, live_previews_add


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--history", type=int, default=100_000, help="stopped sessions")
    parser.add_argument("--sweeps", type=int, default=3, help="timed sweeps per case (median)")
    args = parser.parse_args()

    django_ready(redis=True)
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from chat.models import ChatSession
    from cleanup.models import CleanupRun
    from cleanup.sweep import sweep
    from cleanup.tasks import stop_enqueue
    from kosuke.redis_client import redis_client

    fake = fake_engine_use()
    owner, _ = User.objects.get_or_create(username="bench")
    history_add(owner.pk, args.history)
    print(
        f"{args.history:,} stopped sessions of history; containers simulated by a fake Docker "
        f"API on a Unix socket (bench/fake_engine.py); batch size {settings.CLEANUP_BATCH_SIZE}"
    )
    print(
        f"{'live':>7} {'case':>8} {'median s':>9} {'min s':>7} {'queries':>8} "
        f"{'rows written':>13} {'stops handed out':>17} {'peak MiB':>9}"
    )

    def rows_written() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
                " FROM pg_stat_xact_user_tables"
            )
            return cursor.fetchone()[0]

    def one_sweep(**options) -> CleanupRun:
        return sweep(trigger=CleanupRun.Trigger.COMMAND, **options)

    def reset() -> None:
        CleanupRun.objects.all().delete()
        redis_client().flushdb()

    live_total = 0
    for live in sorted(args.live):
        live_previews_add(fake, owner.pk, live_total, live)
        live_total = live
        connection.cursor().execute("ANALYZE")
        cases = {
            "active": (timedelta(minutes=1), {"dispatch": stop_enqueue}),
            "idle": (timedelta(hours=2), {"dispatch": stop_enqueue}),
            "dry-run": (timedelta(hours=2), {"dispatch": stop_enqueue, "dry_run": True}),
        }
        for case, (quiet, options) in cases.items():
            ChatSession.objects.filter(preview__engine="local").update(
                last_activity_at=timezone.now() - quiet
            )
            timings = []
            for _ in range(args.sweeps):
                reset()
                started = time.perf_counter()
                run = one_sweep(**options)
                timings.append(time.perf_counter() - started)
            reset()
            # Rows counted inside one transaction: the statistics of earlier ones may still
            # be pending in this backend, so the count before is taken away.
            with transaction.atomic():
                written = -rows_written()
                with CaptureQueriesContext(connection) as queries:
                    run = one_sweep(**options)
                written += rows_written()
            handed_out, examined = run.pending, run.examined
            reset()
            tracemalloc.start()
            one_sweep(**options)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            if examined != live:
                raise SystemExit(f"the sweep examined {examined} previews, not {live}")
            print(
                f"{live:>7,} {case:>8} {statistics.median(timings):>9.3f} {min(timings):>7.3f} "
                f"{len(queries):>8} {written:>13,} {handed_out:>17,} "
                f"{peak:>9.1f}"
            )
        reset()
    fake.close()


if __name__ == "__main__":
    main()
