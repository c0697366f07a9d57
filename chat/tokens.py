"""API tokens: issue one (shown once), and find the user a presented token belongs to."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from chat.models import ApiToken
from kosuke.database import database_call
from kosuke.memo import TimedMemo

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


# Token hash -> user: each request with a known token would otherwise cost a query. A
# token deleted or a user deactivated in this process is forgotten at once (chat.apps);
# in another process (another web worker, a shell) it is refused at most
# API_TOKEN_CACHE_SECONDS later. Unknown tokens are never remembered.
_known_tokens: TimedMemo[AbstractBaseUser] = TimedMemo(lambda: settings.API_TOKEN_CACHE_SECONDS)


def api_token_user(raw_token: str) -> AbstractBaseUser | None:
    """The active user owning `raw_token`, or None."""
    key_hash = _hash(raw_token)
    known = _known_tokens.get(key_hash)
    return known if known is not None else _remember(key_hash, _token_owner(key_hash))


async def api_token_user_async(raw_token: str) -> AbstractBaseUser | None:
    """`api_token_user` for async views: a remembered token costs no query and no thread."""
    key_hash = _hash(raw_token)
    known = _known_tokens.get(key_hash)
    if known is not None:
        return known
    owner = await database_call(_token_owner, key_hash)
    return _remember(key_hash, owner)


def _token_owner(key_hash: str) -> AbstractBaseUser | None:
    token = ApiToken.objects.select_related("user").filter(key_hash=key_hash).first()
    return token.user if token and token.user.is_active else None


def _remember(key_hash: str, user: AbstractBaseUser | None) -> AbstractBaseUser | None:
    return None if user is None else _known_tokens.put(key_hash, user)


def api_tokens_forget(*, key_hash: str | None = None, user_pk: int | None = None) -> None:
    """Forget one token, a user's tokens, or (with neither) every token, in this process."""
    if key_hash is None and user_pk is None:
        _known_tokens.forget()
    else:
        _known_tokens.forget(lambda known, user: known == key_hash or user.pk == user_pk)
