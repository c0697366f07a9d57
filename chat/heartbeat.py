"""The heartbeat: record presence, and answer when the preview stops if nothing happens,
without a database query once the session is known.

Every open preview panel heartbeats every ~30 s: at that rate a query per heartbeat
would be most of the database's work, so what it reads of the session is kept in Redis
(chat.heartbeat_cache) and read in the round trip that records presence.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chat.heartbeat_cache import (
    NAME_TTL_SECONDS,
    inputs_current,
    inputs_key,
    inputs_store_if_current,
    name_key,
    version_key,
)
from chat.models import ChatSession
from chat.presence import Presence, heartbeat_record
from chat.selectors import session_missing
from cleanup.decisions import Policy, Snapshot, StopDue, stop_due
from kosuke.database import database_call
from kosuke.redis_client import async_redis_client


async def heartbeat_receive(
    *, owner: AbstractBaseUser, project_id: str, session_id: str, client_id: str
) -> tuple[Presence, StopDue | None]:
    """Mark `client_id` as viewing the owner's session's preview (404 as `session_get`);
    returns its presence and when it stops if nothing happens. Two Redis round trips in
    steady state; a query only for a session not seen for a while, or just changed."""
    now = timezone.now()
    client = async_redis_client()
    name = name_key(owner.pk, project_id, session_id)
    session_pk = await client.get(name)
    if session_pk is None:
        session = await _session_read(owner=owner, project_id=project_id, session_id=session_id)
        await client.set(name, session.pk, ex=NAME_TTL_SECONDS)
        session_pk, inputs = session.pk, _inputs_of(session)
    else:
        session_pk, inputs = int(session_pk), None
    presence, (stored, version) = await heartbeat_record(
        session_pk=session_pk,
        client_id=client_id,
        now=now,
        also_get=(inputs_key(session_pk), version_key(session_pk)),
    )
    if inputs is None:
        inputs = inputs_current(stored, version)
    if inputs is None:
        session = await _session_read(pk=session_pk)
        if session is None:
            await client.delete(name)  # deleted meanwhile
            raise session_missing(project_id, session_id)
        inputs = _inputs_of(session)
        await inputs_store_if_current(session_pk, inputs, version)
    snapshot = _snapshot(inputs)
    return presence, stop_due(snapshot, Policy.from_settings()) if snapshot else None


async def _session_read(**lookup: object) -> ChatSession | None:
    """The session with what the stop rules read of it and its preview: one query. By
    owner and ids it raises 404 when missing; by pk it returns None."""
    session = await database_call(_session_read_now, lookup)
    if session is None and "pk" not in lookup:
        raise session_missing(lookup["project_id"], lookup["session_id"])
    return session


def _session_read_now(lookup: dict) -> ChatSession | None:
    return (
        ChatSession.objects.filter(**lookup)
        .select_related("preview")
        .only(
            "last_activity_at",
            "idle_timeout_minutes",
            "busy_until",
            "preview__state",
            "preview__started_at",
        )
        .first()
    )


def _inputs_of(session: ChatSession) -> dict:
    preview = getattr(session, "preview", None)
    return {
        "last_activity_at": session.last_activity_at.isoformat(),
        "idle_timeout_minutes": session.idle_timeout_minutes,
        "busy_until": session.busy_until.isoformat() if session.busy_until else None,
        "preview": None
        if preview is None
        else {
            "state": preview.state,
            "started_at": preview.started_at.isoformat() if preview.started_at else None,
        },
    }


def _moment(text: str | None) -> datetime | None:
    return parse_datetime(text) if text else None


def _snapshot(inputs: dict) -> Snapshot | None:
    preview = inputs["preview"]
    if preview is None:
        return None
    idle_minutes = inputs["idle_timeout_minutes"]
    return Snapshot(
        preview_state=preview["state"],
        last_activity_at=_moment(inputs["last_activity_at"]),
        idle_timeout=timedelta(minutes=idle_minutes) if idle_minutes else None,
        busy_until=_moment(inputs["busy_until"]),
        started_at=_moment(preview["started_at"]),
    )
