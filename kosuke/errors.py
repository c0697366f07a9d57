"""The one error type the API turns into a 4xx (or 503) JSON answer."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A request the service refuses, with the HTTP status and a message for the caller.

    Services raise it before they change anything, so a refused request leaves no trace.
    """

    def __init__(self, message: str, *, status: int = 400, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra or {}
