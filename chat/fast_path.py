"""The API's hot path, served on the event loop beside Django (kosuke.asgi): the heartbeat
and sending a message, with an API token.

Every open preview panel sends a heartbeat every ~30 s and every chat message records
activity, so these two routes decide how many users a web process serves. Through
Django each costs the middleware, ninja's machinery and hops to threads, several times
the work of the heartbeat (chat.heartbeat) or the message's one statement
(chat.services.message_send). Here the same request gets the same answer, byte for
byte, for the common case only: a valid token, good input, a session of the caller's.
Everything else (a browser session, bad input, an unknown session, an error, a
plain-HTTP request Django would redirect) goes on to Django with the body already read,
so errors, logging and Sentry stay in one place (kosuke.asgi_http.answer_or_django).
"""

from __future__ import annotations

import functools
import re

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from pydantic import ValidationError

from chat import services
from chat.heartbeat import heartbeat_receive
from chat.models import IDENTIFIER_PATTERN
from chat.schemas import HeartbeatIn, MessageIn, MessageOut, PresenceOut
from chat.tokens import api_token_user_async
from kosuke.asgi_http import Answer, headers_of, host_allowed, json_body
from kosuke.database import database_call
from kosuke.errors import ApplicationError

_ID = IDENTIFIER_PATTERN.removeprefix("^").removesuffix("$")
_SESSION = rf"/api/projects/(?P<project_id>{_ID})/chat-sessions/(?P<session_id>{_ID})"


async def _heartbeat(scope: dict, body: bytes, *, ids: dict[str, str]) -> tuple[int, bytes] | None:
    try:
        client_id = HeartbeatIn.model_validate_json(body).client_id
    except ValidationError:
        return None
    owner = await _owner(scope)
    if owner is None:
        return None
    try:
        seen, stops = await heartbeat_receive(owner=owner, client_id=client_id, **ids)
    except ApplicationError:  # an unknown session: Django's 404
        return None
    return 200, json_body(PresenceOut.of(seen, stops).model_dump())


async def _message(scope: dict, body: bytes, *, ids: dict[str, str]) -> tuple[int, bytes] | None:
    try:
        message_in = MessageIn.model_validate_json(body)
    except ValidationError:
        return None
    owner = await _owner(scope)
    if owner is None:
        return None
    try:
        message = await database_call(
            services.message_send,
            owner=owner,
            content=message_in.content,
            role=message_in.role,
            # Not on the one thread-sensitive thread: every message writes, many at once.
            thread_sensitive=False,
            **ids,
        )
    except ApplicationError:  # an unknown session (nothing written): Django's 404
        return None
    return 201, json_body(MessageOut.model_validate(message).model_dump())


ROUTES = [
    ("POST", re.compile(rf"{_SESSION}/heartbeat"), _heartbeat),
    ("POST", re.compile(_SESSION), _message),
]


def fast_route(scope: dict) -> Answer | None:
    """How the fast path answers this request; None for a request only Django serves."""
    for method, pattern, answer in ROUTES:
        if scope["method"] == method and (ids := pattern.fullmatch(scope["path"])):
            return functools.partial(answer, ids=ids.groupdict())
    return None


async def _owner(scope: dict) -> AbstractBaseUser | None:
    """The active user whose API token the request bears; None where Django should
    decide (no token, an unknown one, a host or scheme Django would refuse)."""
    headers = headers_of(scope)
    if settings.SECURE_SSL_REDIRECT and scope["scheme"] != "https":
        return None
    if not host_allowed(headers.get("host", "")):
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return await api_token_user_async(token.strip())
