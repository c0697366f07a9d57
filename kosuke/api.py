"""The JSON API: authentication, and the one place where errors become JSON answers.

Every error body has the same shape: `{"error": "<what is wrong, one line>", ...}`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from chat.api import router as chat_router
from cleanup.api import cron as cron_router
from cleanup.api import ops as ops_router
from kosuke.auth import ApiTokenAuth, BrowserSessionAuth
from kosuke.errors import ApplicationError
from previews.api import router as previews_router

logger = logging.getLogger(__name__)
# Seconds a client should wait before trying again when a store is down.
RETRY_AFTER_SECONDS = 5


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "what is wrong, in one line"},
        "detail": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["error"],
}
# Every answer a route may give besides its own, described once (see KosukeAPI).
ERRORS_EVERYWHERE = {
    "400": "Refused: well formed, but not allowed (e.g. a keep-alive too far ahead), or not JSON",
    "401": "No valid session or bearer token",
    "404": "Not found: no such session of yours (or run)",
    "413": "The request body is too big",
    "422": "Invalid input: the message names each field",
    "503": "A store (PostgreSQL, Redis) or the workers are unavailable; see Retry-After",
}
ERRORS_BY_PATH = {
    "/preview": {
        "409": "The preview is being started or stopped right now",
        "502": "The Docker engine refused for good (e.g. a missing image)",
    },
    "/chat-sessions": {"409": "A session with this id exists already"},
}
# The operator API: staff only, and runs that are not in a state for the request.
ERRORS_OPS = {
    "403": "Not a staff user",
    "409": "The run is not in a state for this (finished, not finished, nothing failed)",
}


class KosukeAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """The schema, with the error answers every route can give and their one body."""
        schema = super().get_openapi_schema(**kwargs)
        schema["components"]["schemas"]["Error"] = ERROR_SCHEMA
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in schema["paths"].items():
            errors = dict(ERRORS_EVERYWHERE)
            for ending, extra in ERRORS_BY_PATH.items():
                if path.endswith(ending):
                    errors |= extra
            if "/ops/" in path:
                errors |= ERRORS_OPS
            for operation in operations.values():
                for status, description in errors.items():
                    operation["responses"].setdefault(
                        status, {"description": description, "content": body}
                    )
        return schema


api = KosukeAPI(
    title="Kosuke preview cleanup API",
    version="1",
    auth=[ApiTokenAuth(), BrowserSessionAuth()],
    urls_namespace="api",
)
api.add_router("/projects/", chat_router)
api.add_router("/projects/", previews_router)
api.add_router("/ops/", ops_router)
api.add_router("/cron/", cron_router)


def _error(request: HttpRequest, status: int, message: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"error": message, **extra}, status=status)


def _describe(error: dict[str, Any]) -> str:
    """`body.idle_timeout_minutes: Input should be ...`: ninja's location names the source,
    then the view's parameter ("body" again for a body), then the field; said once."""
    parts = [str(part) for part in error.get("loc", ())]
    where = [part for n, part in enumerate(parts) if n == 0 or part != parts[n - 1]]
    return f"{'.'.join(where)}: {error.get('msg', 'invalid')}"


@api.exception_handler(ApplicationError)
def application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return _error(request, exc.status, exc.message, **exc.extra)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    message = "; ".join(_describe(error) for error in exc.errors)
    return _error(request, 422, message, detail=exc.errors)


@api.exception_handler(AuthenticationError)
def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request, 401, "authentication required: log in, or send 'Authorization: Bearer <token>'"
    )


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, json.JSONDecodeError):
        return _error(request, 400, f"request body is not valid JSON: {exc.__cause__}")
    return _error(request, exc.status_code, str(exc))


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not found")


@api.exception_handler(RequestDataTooBig)
def body_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(
        request, 413, f"request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
    )


STORES_DOWN = (
    (redis.RedisError, "presence store (Redis)"),
    ((OperationalError, InterfaceError), "database (PostgreSQL)"),
)


def store_down(exc: Exception, method: str, path: str) -> str | None:
    """When `exc` says a store is down: the 503 answer's message, logged as one line (not a
    traceback). None for any other exception."""
    for kind, store in STORES_DOWN:
        if isinstance(exc, kind):
            logger.error("%s unavailable for %s %s: %s", store, method, path, exc)
            return f"{store} unavailable, try again shortly: {exc}".strip()
    return None


@api.exception_handler(redis.RedisError)
@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def store_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A store is down: 503 with Retry-After."""
    response = _error(request, 503, store_down(exc, request.method, request.path))
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
