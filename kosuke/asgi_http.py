"""What the apps served beside Django (kosuke.asgi) need of HTTP: the request's headers,
Django's host check, and a whole answer in two messages."""

from __future__ import annotations

from django.conf import settings
from django.http.request import split_domain_port, validate_host


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
