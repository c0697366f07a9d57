"""What the apps served beside Django (kosuke.asgi) need of HTTP: the request's headers,
Django's host check, whole answers with the headers Django's middleware gives, and the
fast path's frame: answer on the event loop when all is well, else hand on to Django."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from ninja.responses import NinjaJSONEncoder

from kosuke.api import RETRY_AFTER_SECONDS, store_down

# (status, JSON body), or None where Django should answer.
Answer = Callable[[dict, bytes], Awaitable[tuple[int, bytes] | None]]


def headers_of(scope: dict) -> dict[str, str]:
    """The request's headers by lower-case name (a repeated one: its last value)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def host_allowed(host: str) -> bool:
    """Whether Django would accept this Host header (ALLOWED_HOSTS, and its DEBUG default)."""
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django allows
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


async def respond(send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def json_body(data) -> bytes:
    """`data` as the API's JSON renderer writes it."""
    return json.dumps(data, cls=NinjaJSONEncoder).encode()


async def answer_or_django(scope: dict, receive, send, answer: Answer, django) -> None:
    """Answer the request with `answer`, or hand it to `django` as it came.

    `answer` returns None where Django should answer (bad input, an unknown session), and
    must have written nothing then. A store that is down gets the API's 503 at once
    (Django would wait for it a second time); any other exception is Django's to answer
    and report: the request goes on to it.
    """
    body, complete = await _body_read(receive)
    try:
        answered = await answer(scope, body) if complete else None
    except Exception as exc:
        message = store_down(exc, scope["method"], scope["path"])
        if message is None:
            answered = None
        else:
            error = json_body({"error": message})
            retry = (b"Retry-After", str(RETRY_AFTER_SECONDS).encode())
            return await respond(send, 503, [*django_headers(scope, error), retry], error)
    if answered is None:
        return await django(scope, _replaying(body, complete, receive), send)
    status, content = answered
    await respond(send, status, django_headers(scope, content), content)


def django_headers(scope: dict, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers Django's middleware gives a JSON answer, as Django writes them (tests
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
