"""Shared-secret bearer checks (the cron endpoint, /metrics): constant-time comparison."""

from __future__ import annotations

import hmac

from django.http import HttpRequest


def bearer_matches(request: HttpRequest, secret: str) -> bool:
    """Whether the request sends `Authorization: Bearer <secret>` (`secret` not empty)."""
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(secret)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(sent.strip().encode(), secret.encode())
    )
