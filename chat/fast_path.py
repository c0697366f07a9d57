"""The heartbeat with an API token, served on the event loop beside Django (kosuke.asgi).

Every open preview panel sends one every ~30 s, so this route decides how many panels a
web process serves. Through Django it costs the middleware, ninja's machinery and a hop
to a thread to close the response, several times the work of the heartbeat itself
(chat.heartbeat). Here the same heartbeat gets the same answer, byte for byte, for the
common case only: a valid token, good input, a session of the caller's. Everything else
(a browser session, bad input, an unknown session, an error, a plain-HTTP request Django
would redirect) goes on to Django with the body already read, so errors, logging and
Sentry stay in one place; only a store that is down is answered here, with the API's 503,
as Django would wait for it a second time.
"""

from __future__ import annotations

import json
import re

from django.conf import settings
from ninja.responses import NinjaJSONEncoder
from pydantic import ValidationError

from chat.heartbeat import heartbeat_receive
from chat.models import IDENTIFIER_PATTERN
from chat.schemas import HeartbeatIn, PresenceOut
from chat.tokens import api_token_user_async
from kosuke.api import RETRY_AFTER_SECONDS, store_down
from kosuke.asgi_http import headers_of, host_allowed, respond
from kosuke.errors import ApplicationError

_ID = IDENTIFIER_PATTERN.removeprefix("^").removesuffix("$")
ROUTE = re.compile(
    rf"/api/projects/(?P<project_id>{_ID})/chat-sessions/(?P<session_id>{_ID})/heartbeat"
)


def heartbeat_ids(scope: dict) -> dict[str, str] | None:
    """The project and session ids of a heartbeat request; None for any other request."""
    ids = ROUTE.fullmatch(scope["path"]) if scope["method"] == "POST" else None
    return ids.groupdict() if ids else None


async def heartbeat_or_django(scope: dict, ids: dict[str, str], receive, send, django) -> None:
    """Answer the heartbeat to session `ids`, or hand the request to `django` as it came."""
    body, complete = await _body_read(receive)
    try:
        answer = await _answer(scope, ids, body) if complete else None
    except Exception as exc:
        # A store that is down gets the API's 503 at once (Django would wait for it a
        # second time); anything else is Django's to answer and report.
        message = store_down(exc, scope["method"], scope["path"])
        if message is None:
            answer = None
        else:
            error = json.dumps({"error": message}, cls=NinjaJSONEncoder).encode()
            retry = (b"Retry-After", str(RETRY_AFTER_SECONDS).encode())
            return await respond(send, 503, [*_headers(scope, error), retry], error)
    if answer is None:
        return await django(scope, _replaying(body, complete, receive), send)
    await respond(send, 200, _headers(scope, answer), answer)


async def _answer(scope: dict, ids: dict[str, str], body: bytes) -> bytes | None:
    """The JSON answer, or None where Django should answer (an exception: see above)."""
    headers = headers_of(scope)
    if settings.SECURE_SSL_REDIRECT and scope["scheme"] != "https":
        return None
    if not host_allowed(headers.get("host", "")):
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        client_id = HeartbeatIn.model_validate_json(body).client_id
    except ValidationError:
        return None
    owner = await api_token_user_async(token.strip())
    if owner is None:
        return None
    try:
        seen, stops = await heartbeat_receive(
            owner=owner,
            project_id=ids["project_id"],
            session_id=ids["session_id"],
            client_id=client_id,
        )
    except ApplicationError:  # an unknown session: Django's 404
        return None
    return json.dumps(PresenceOut.of(seen, stops).model_dump(), cls=NinjaJSONEncoder).encode()


def _headers(scope: dict, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers Django's middleware gives this answer, as Django writes them (tests
    compare the two)."""
    headers = [
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
        (b"X-Frame-Options", settings.X_FRAME_OPTIONS.encode()),
    ]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"X-Content-Type-Options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append((b"Referrer-Policy", settings.SECURE_REFERRER_POLICY.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        policy = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()
        headers.append((b"Cross-Origin-Opener-Policy", policy))
    if settings.SECURE_HSTS_SECONDS and scope["scheme"] == "https":
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append((b"Strict-Transport-Security", hsts.encode()))
    return headers


async def _body_read(receive) -> tuple[bytes, bool]:
    """The request body, and whether that is all of it (False: too big for the fast
    path, or the client went away; Django deals with either)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return b"".join(chunks), False


def _replaying(body: bytes, complete: bool, receive):
    """`receive` as if nothing had been read: the body read so far comes first."""
    pending = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay
