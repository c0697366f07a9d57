"""The dashboard's live feed: cleanup progress as Server-Sent Events at `/ops/events`.

A plain ASGI app beside Django's (kosuke.asgi routes this one path here) because an open
stream must hold neither a thread nor a database connection, and Django's handler keeps
a thread for each request until its response ends. It checks what Django would (the
host, a staff user's session: in a shared thread, whose database connection goes back
to the pool at once), then streams on the event loop:

1. subscribe to `cleanup:progress`: one pub/sub connection per stream, closed when the
   client goes;
2. send what `cleanup:events` holds after the `Last-Event-ID` header (or `?since=`), so a
   reconnect loses nothing; an id older than the events kept gets a `reset` event
   (the page reloads its state);
3. then each published event with its id, skipping any already sent, and a comment
   every LIVE_KEEPALIVE_SECONDS so that proxies keep an idle stream open.

Open streams are capped per user and per web process (LIVE_STREAMS_PER_USER,
LIVE_STREAMS_MAX); one more is refused with 429 and a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from http.cookies import SimpleCookie
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth

from cleanup.progress import CHANNEL, EVENTS_KEPT, EVENTS_KEY
from kosuke.asgi_http import headers_of, host_allowed, respond
from kosuke.database import connection_give_back
from kosuke.redis_client import async_redis_client

PATH = "/ops/events"
logger = logging.getLogger(__name__)
_EVENT_ID = re.compile(r"(\d{1,20})-(\d{1,20})")

# Streams open in this process, by user pk.
streams_open: Counter[int] = Counter()


def _event_id(text: str) -> tuple[int, int]:
    match = _EVENT_ID.fullmatch(text)
    if match is None:
        raise ValueError(
            f"event id {text!r}: expected an id this feed sent, such as 1700000000000-0"
        )
    return int(match[1]), int(match[2])


async def live_events(scope: dict, receive, send) -> None:
    """The ASGI app: refuse with a 4xx and a message, or stream until the client goes."""
    headers = headers_of(scope)
    if scope["method"] != "GET":
        return await _refuse(send, 405, "only GET: this is an event stream")
    if not host_allowed(headers.get("host", "")):
        return await _refuse(send, 400, "this host is not allowed (ALLOWED_HOSTS)")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    since = headers.get("last-event-id") or query.get("since", [""])[0]
    try:
        since_id = _event_id(since) if since else None
    except ValueError as exc:
        return await _refuse(send, 400, str(exc))
    cookies = SimpleCookie(headers.get("cookie", ""))
    session = cookies.get(settings.SESSION_COOKIE_NAME)
    user_pk = await sync_to_async(_staff_user_pk, thread_sensitive=False)(
        session.value if session else None
    )
    if user_pk is None:
        return await _refuse(send, 403, "operators only: log in as a staff user")
    if streams_open[user_pk] >= settings.LIVE_STREAMS_PER_USER:
        return await _refuse(
            send, 429, f"too many live streams for this user ({settings.LIVE_STREAMS_PER_USER})"
        )
    if streams_open.total() >= settings.LIVE_STREAMS_MAX:
        return await _refuse(
            send, 429, f"too many live streams on this server ({settings.LIVE_STREAMS_MAX})"
        )
    streams_open[user_pk] += 1
    try:
        await _until_disconnected(receive, _stream(send, since_id))
    finally:
        streams_open[user_pk] -= 1
        if streams_open[user_pk] <= 0:
            del streams_open[user_pk]


def _staff_user_pk(session_key: str | None) -> int | None:
    """The staff user logged in with this session, read as Django's auth would (the
    session's hash checked); the database connection goes back to the pool at once."""
    if not session_key:
        return None
    try:
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = auth.get_user(SimpleNamespace(session=store))
        return user.pk if user.is_active and user.is_staff else None
    finally:
        connection_give_back()


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await respond(send, status, headers, body)


async def _until_disconnected(receive, streaming) -> None:
    """Run `streaming` until it ends or the client disconnects, whichever comes first."""

    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(streaming), asyncio.ensure_future(disconnect())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _stream(send, since: tuple[int, int] | None) -> None:
    client = async_redis_client()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    started = False
    try:
        await pubsub.subscribe(CHANNEL)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
                ],
            }
        )
        started = True
        await _write(send, "retry: 3000\n\n")
        last = since
        if since is not None:
            last = await _replay(client, send, since)
        await _follow(pubsub, send, last)
    except redis.RedisError as exc:
        # The client reconnects with its last id once Redis is back; nothing is lost.
        logger.warning("live stream ended: Redis unavailable: %s", exc)
        if not started:
            await _refuse(send, 503, f"live progress is unavailable: Redis: {exc}")
            return
    finally:
        await pubsub.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _write(send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


def _frame(event_id: str, data: str) -> str:
    return f"id: {event_id}\ndata: {data}\n\n"


async def _replay(client, send, since: tuple[int, int]) -> tuple[int, int]:
    """Send the events kept after `since`; returns the id of the last one sent."""
    oldest = await client.xrange(EVENTS_KEY, count=1)
    if since != (0, 0) and (not oldest or _event_id(oldest[0][0]) > since):
        # Events after `since` may have been dropped (or lost with Redis): the page
        # reloads its state from the database.
        await _write(send, 'event: reset\ndata: {"reason": "events were missed"}\n\n')
    last = since
    for event_id, fields in await client.xrange(
        EVENTS_KEY, min=f"({since[0]}-{since[1]}", count=EVENTS_KEPT
    ):
        await _write(send, _frame(event_id, fields["event"]))
        last = _event_id(event_id)
    return last


async def _follow(pubsub, send, last: tuple[int, int] | None) -> None:
    """Pass each published event on (once), with a keep-alive comment when idle."""
    keepalive = settings.LIVE_KEEPALIVE_SECONDS
    written = time.monotonic()
    while True:
        message = await pubsub.get_message(timeout=keepalive)
        if message is None:
            if time.monotonic() - written >= keepalive:
                await _write(send, ": keep-alive\n\n")
                written = time.monotonic()
            continue
        event_id, _, data = message["data"].partition(" ")
        current = _event_id(event_id)
        if last is not None and current <= last:
            continue  # sent already from the stream
        await _write(send, _frame(event_id, data))
        last, written = current, time.monotonic()
