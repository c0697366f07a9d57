"""Small builders for real rows, with explicit timestamps where a test depends on them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from chat.models import ChatSession
from chat.tokens import api_token_create


def user_create(username: str, **fields) -> User:
    return User.objects.create_user(username=username, **fields)


def chat_session_create(
    owner: User,
    *,
    project_id: str = "proj-1",
    session_id: str = "sess-1",
    last_activity_at: datetime | None = None,
    **fields,
) -> ChatSession:
    now = timezone.now()
    return ChatSession.objects.create(
        owner=owner,
        project_id=project_id,
        session_id=session_id,
        last_activity_at=last_activity_at or now,
        **fields,
    )


def api_client(user: User) -> Client:
    """A client that authenticates like an integration: with a bearer token."""
    _token, raw_token = api_token_create(user=user)
    return Client(headers={"Authorization": f"Bearer {raw_token}"})


def session_address(session: ChatSession) -> dict:
    """Who owns the session and its ids: how the API (and `message_send`) name it."""
    return {
        "owner": session.owner,
        "project_id": session.project_id,
        "session_id": session.session_id,
    }


def session_with_running_preview(
    owner: User, *, session_id: str, idle_for: timedelta, **fields
) -> ChatSession:
    """A session whose preview runs on the real engine, last active `idle_for` ago."""
    from previews.services import preview_open

    session = chat_session_create(owner, session_id=session_id, **fields)
    preview_open(session=session)
    ChatSession.objects.filter(pk=session.pk).update(last_activity_at=timezone.now() - idle_for)
    session.refresh_from_db()
    return session


def sessions_bulk_insert(owner: User, count: int, *, spread: timedelta) -> None:
    """`count` sessions of `owner`, their last activity spread evenly over `spread` ago."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO chat_chatsession
                (owner_id, project_id, session_id, title, created_at, updated_at, last_activity_at)
            SELECT %s, 'p' || (n %% 100), 's' || n, '', now(), now(), now() - (n * %s / %s)
            FROM generate_series(1, %s) AS n
            """,
            [owner.pk, spread, count, count],
        )
        cursor.execute("ANALYZE chat_chatsession")


def database_url_for_processes() -> str:
    """The test database, for processes the tests start (it exists while the tests run)."""
    db = connection.settings_dict
    host = db["HOST"] or db["OPTIONS"].get("host", "")
    port = f"&port={db['PORT']}" if db["PORT"] else ""
    return f"postgres://{db['USER']}:{db['PASSWORD']}@/{db['NAME']}?host={host}{port}"


def stop_decisions_create(run, outcomes: Iterable[str]) -> list:
    """One inactivity stop decision of `run` per outcome, for sessions proj/s0, proj/s1, ...
    (no chat session rows); a failed one says why."""
    from cleanup.models import StopDecision

    return StopDecision.objects.bulk_create(
        StopDecision(
            run=run,
            project_id="proj",
            session_id=f"s{n}",
            stop_reason="inactive",
            reason=f"stopped after {40 + n} min without activity (threshold 30 min)",
            level="background",
            outcome=outcome,
            outcome_detail="engine unreachable" if outcome == StopDecision.Outcome.FAILED else "",
        )
        for n, outcome in enumerate(outcomes)
    )
