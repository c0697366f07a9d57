"""EXPLAIN ANALYZE of the inactive-session query on a table of 100,000 sessions.

Run: uv run python bench/explain_inactive_sessions.py [--sessions N]
Starts a throwaway PostgreSQL (unless DATABASE_URL is set), migrates, fills the table with
sessions whose activity is spread over 90 days, and prints the plans and timings.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from harness import django_ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="rows to insert")
    parser.add_argument("--batch", type=int, default=100, help="batch size of the sweep query")
    args = parser.parse_args()
    django_ready()

    from django.contrib.auth.models import User
    from django.utils import timezone

    from chat.models import ChatSession
    from chat.selectors import sessions_inactive
    from tests.builders import sessions_bulk_insert

    ChatSession.objects.all().delete()
    owner, _ = User.objects.get_or_create(username="bench")
    sessions_bulk_insert(owner, args.sessions, spread=timedelta(days=90))

    query = sessions_inactive(now=timezone.now(), threshold=timedelta(minutes=30))
    print(f"sessions: {ChatSession.objects.count()}, inactive > 30 min: {query.count()}")
    print(f"\n-- a sweep batch: sessions_inactive(...)[:{args.batch}]")
    print(query[: args.batch].explain(analyze=True))
    print("\n-- sessions that went inactive in the last 10 minutes (threshold 30 min)")
    recent = query.filter(last_activity_at__gte=timezone.now() - timedelta(minutes=40))
    print(recent.explain(analyze=True))


if __name__ == "__main__":
    main()
