"""EXPLAIN ANALYZE of the inactive-session query on a table of 100,000 sessions.

Run: uv run python bench/explain_inactive_sessions.py [--sessions N]
Starts a throwaway PostgreSQL (unless DATABASE_URL is set), migrates, fills the table with
sessions whose activity is spread over 90 days, and prints the plans and timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kosuke import embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="rows to insert")
    parser.add_argument("--batch", type=int, default=100, help="batch size of the sweep query")
    args = parser.parse_args()

    if not os.environ.get("DATABASE_URL"):
        data_dir = Path(tempfile.mkdtemp(prefix="kosuke-bench-")) / "pg"
        os.environ["DATABASE_URL"], _server = embedded.postgres_start(data_dir, delete_on_exit=True)
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ["DJANGO_SETTINGS_MODULE"] = "kosuke.settings"

    import django

    django.setup()
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from chat.models import ChatSession
    from chat.selectors import sessions_inactive

    call_command("migrate", verbosity=0)
    ChatSession.objects.all().delete()
    owner, _ = User.objects.get_or_create(username="bench")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO chat_chatsession
                (owner_id, project_id, session_id, title, created_at, updated_at, last_activity_at)
            SELECT %s, 'p' || (n %% 1000), 's' || n, '', now(), now(),
                   now() - (n * interval '90 days' / %s)
            FROM generate_series(1, %s) AS n
            """,
            [owner.pk, args.sessions, args.sessions],
        )
        cursor.execute("ANALYZE chat_chatsession")

    query = sessions_inactive(now=timezone.now(), threshold=timedelta(minutes=30))
    print(f"sessions: {ChatSession.objects.count()}, inactive > 30 min: {query.count()}")
    print(f"\n-- a sweep batch: sessions_inactive(...)[:{args.batch}]")
    print(query[: args.batch].explain(analyze=True))
    print("\n-- sessions that went inactive in the last 10 minutes (threshold 30 min)")
    recent = query.filter(last_activity_at__gte=timezone.now() - timedelta(minutes=40))
    print(recent.explain(analyze=True))


if __name__ == "__main__":
    main()
