"""What the operators' numbers cost on a long history: GET /api/ops/stats (24h and 7d) and a
/metrics scrape with 1,000,000 sessions (each with a preview; 1,000 running) and
1,000,000 stop decisions spread over 14 days. Target: each at most 200 ms.

Run: LOG_LEVEL=WARNING uv run python bench/ops_stats.py [--sessions N] [--decisions N]
     [--repeat 7]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set); the
requests go through Django's whole stack in this process (middleware, authentication,
serialization), timed from request to response. The first statistics read rolls up the
final hours of the seeded history at once (in production the hourly history task keeps
that up to date hour by hour); "first ms" shows what that cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import django_ready

SESSIONS_SQL = """
INSERT INTO chat_chatsession
    (owner_id, project_id, session_id, title, created_at, updated_at, last_activity_at)
SELECT %(owner)s, 'p' || (n %% 1000), 's' || n, '', now(), now(),
       now() - make_interval(secs => (n %% 1209600))
FROM generate_series(1, %(sessions)s) AS n
"""
PREVIEWS_SQL = """
INSERT INTO previews_preview
    (session_id, state, state_changed_at, engine, started_at, start_detail, stopped_at,
     last_stop_reason, last_stop_detail, last_error, claim_token)
SELECT id, CASE WHEN id %% (%(sessions)s / %(running)s) = 0 THEN 'running' ELSE 'stopped' END,
       now(), 'unix:///var/run/docker.sock', now(), '', NULL, '', '', '', ''
FROM chat_chatsession
"""
RUNS_SQL = """
INSERT INTO cleanup_cleanuprun
    (trigger, threshold_minutes, dry_run, batch_size, started_at, swept_at, examined,
     deferred, undecided, sweep_errors, engine_list_calls, duration_ms, paused, note)
SELECT 'beat', 30, false, 100, now() - make_interval(mins => n * 4),
       now() - make_interval(mins => n * 4), 1000, 0, 0, '[]', 1, 900, false, ''
FROM generate_series(1, 5040) AS n
"""
DECISIONS_SQL = """
INSERT INTO cleanup_stopdecision
    (run_id, chat_session_id, project_id, session_id, stop_reason, reason, level, containers,
     decided_at, due_at, began_at, outcome, outcome_detail, settled_at)
SELECT r.id, NULL, 'p', 's' || n,
       (ARRAY['inactive', 'inactive', 'inactive', 'disconnected', 'max_age', 'orphan'])[1 + n %% 6],
       'stopped after 31 min without activity (threshold 30 min)', 'background', '[]',
       r.started_at, r.started_at - make_interval(secs => n %% 600), r.started_at,
       (ARRAY['stopped', 'stopped', 'stopped', 'stopped', 'stopped', 'stopped', 'stopped',
              'skipped', 'failed', 'dry_run'])[1 + n %% 10],
       '', r.started_at + make_interval(secs => 1 + n %% 5)
FROM generate_series(1, %(decisions)s) AS n
JOIN cleanup_cleanuprun r ON r.id = (SELECT min(id) FROM cleanup_cleanuprun) + n %% 5040
"""


def _answered(response) -> None:
    if response.status_code != 200:
        raise SystemExit(f"{response.status_code}: {response.content[:300]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--running", type=int, default=1000, help="running previews")
    parser.add_argument("--repeat", type=int, default=7, help="timed requests each (median)")
    args = parser.parse_args()

    django_ready(redis=True)
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from chat.tokens import api_token_create

    settings.METRICS_TOKEN = "bench"  # noqa: S105 - a throwaway server's token
    settings.ALLOWED_HOSTS, settings.SECURE_SSL_REDIRECT = ["testserver"], False
    owner = User.objects.create_user("bench-owner")
    staff = User.objects.create_user("bench-operator", is_staff=True)
    staff_api = Client(headers={"Authorization": f"Bearer {api_token_create(user=staff)[1]}"})
    scraper = Client(headers={"Authorization": "Bearer bench"})

    started = time.monotonic()
    params = {"owner": owner.pk, **vars(args)}
    with connection.cursor() as cursor:
        for sql in (SESSIONS_SQL, PREVIEWS_SQL, RUNS_SQL, DECISIONS_SQL):
            cursor.execute(sql, params)
        cursor.execute("VACUUM ANALYZE")
    print(
        f"seeded {args.sessions:,} sessions and previews ({args.running:,} running), 5,040 runs "
        f"and {args.decisions:,} decisions over 14 days in {time.monotonic() - started:.0f} s"
    )

    cases = {
        "GET /api/ops/stats?window=24h": (staff_api, "/api/ops/stats?window=24h"),
        "GET /api/ops/stats?window=7d": (staff_api, "/api/ops/stats?window=7d"),
        "GET /metrics": (scraper, "/metrics"),
    }
    print(f"{'request':34} {'first ms':>8} {'median ms':>9} {'max ms':>7} {'queries':>7}")
    for name, (client, path) in cases.items():
        begun = time.perf_counter()
        _answered(client.get(path))  # warm up (the first read rolls up the final hours)
        first = (time.perf_counter() - begun) * 1000
        times = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as queries:
                begun = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - begun) * 1000)
            _answered(response)
        slowest = max(queries.captured_queries, key=lambda query: float(query["time"]))
        print(
            f"{name:34} {first:8.0f} {statistics.median(times):9.1f} {max(times):7.1f} "
            f"{len(queries):7}"
            f"   slowest query {float(slowest['time']) * 1000:.0f} ms: {slowest['sql'][:60]}"
        )


if __name__ == "__main__":
    main()
