"""What one sweep costs as the history of stopped sessions grows: queries, Docker list
calls and time, with a fixed number of running previews on the local engine.

Run: DOCKER_HOST=... uv run python bench/sweep_cost.py [--running 20] [--history 0 1000 100000]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set) and
builds the busybox test image. Sweeps are dry runs, so the running previews stay up.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import django_ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=20, help="running previews")
    parser.add_argument(
        "--history", type=int, nargs="+", default=[0, 1000, 100_000], help="stopped sessions"
    )
    parser.add_argument("--sweeps", type=int, default=5, help="sweeps measured per size")
    args = parser.parse_args()

    django_ready(redis=True)
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from chat.models import ChatSession
    from cleanup.models import CleanupRun
    from cleanup.sweep import sweep
    from previews.engine import engine
    from previews.services import preview_open
    from tests.preview_image import preview_image_build

    settings.PREVIEW_IMAGE = preview_image_build(engine().client)
    owner, _ = User.objects.get_or_create(username="bench")
    live = []
    for n in range(args.running):
        session = ChatSession.objects.create(owner=owner, project_id="live", session_id=f"s{n}")
        preview_open(session=session)
        live.append(session.pk)
    ChatSession.objects.filter(pk__in=live).update(
        last_activity_at=timezone.now() - timedelta(hours=1)
    )

    print(f"{args.running} running previews on {engine().url}; dry-run sweeps")
    print(f"{'stopped sessions':>17} {'queries':>8} {'list calls':>11} {'median ms':>10}")
    inserted = 0
    try:
        for history in args.history:
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    WITH s AS (
                        INSERT INTO chat_chatsession (owner_id, project_id, session_id, title,
                            created_at, updated_at, last_activity_at)
                        SELECT %s, 'old', 'h' || n, '', now(), now(), now() - interval '30 days'
                        FROM generate_series(%s, %s) AS n RETURNING id)
                    INSERT INTO previews_preview (session_id, state, state_changed_at, engine,
                        last_stop_reason, last_stop_detail, last_error, claim_token)
                    SELECT id, 'stopped', now(), 'unix:///gone', 'inactive', '', '', '' FROM s
                    """,
                    [owner.pk, inserted + 1, history],
                )
                cursor.execute("ANALYZE")
            inserted = max(inserted, history)
            timings, queries, calls = [], 0, 0
            for _ in range(args.sweeps):
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    run = sweep(
                        trigger=CleanupRun.Trigger.COMMAND, dispatch=lambda d: None, dry_run=True
                    )
                    timings.append((time.perf_counter() - started) * 1000)
                queries, calls = len(captured), run.engine_list_calls
            print(f"{history:>17} {queries:>8} {calls:>11} {statistics.median(timings):>10.1f}")
    finally:
        for container in engine().containers({"kosuke.managed_by": settings.PREVIEW_MANAGED_BY}):
            engine().remove(container.id)


if __name__ == "__main__":
    main()
