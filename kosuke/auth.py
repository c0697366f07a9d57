"""How API callers authenticate: a bearer token, or a logged-in browser (with CSRF)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from chat.tokens import api_token_user, api_token_user_async


class ApiTokenAuth(HttpBearer):
    """`Authorization: Bearer <token>` with a token from `create_api_token` or the admin."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return api_token_user(token)


class BrowserSessionAuth(SessionAuth):
    """A logged-in browser; CSRF is checked only once there is a session to protect."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


class AsyncApiTokenAuth(HttpBearer):
    """`ApiTokenAuth` for async routes (the heartbeat): a token this process knows costs
    no query and no hop to a thread."""

    async def authenticate(self, request: HttpRequest, token: str) -> Any:
        return await api_token_user_async(token)
