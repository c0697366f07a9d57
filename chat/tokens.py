"""API tokens: issue one (shown once), and find the user a presented token belongs to."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser

from chat.models import ApiToken

TOKEN_PREFIX = "ksk_"  # noqa: S105 - a marker that makes leaked tokens easy to scan for


def _hash(raw_token: str) -> str:
    # Tokens carry 256 random bits, so a fast unsalted hash is enough to make a stolen
    # database useless; lookups by hash also leak nothing useful through timing.
    return hashlib.sha256(raw_token.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the raw token, which is not stored."""
    raw_token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw_token[:12], key_hash=_hash(raw_token)
    )
    return token, raw_token


def api_token_user(raw_token: str) -> AbstractBaseUser | None:
    """The active user owning `raw_token`, or None."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_hash(raw_token), user__is_active=True)
        .first()
    )
    return token.user if token else None
