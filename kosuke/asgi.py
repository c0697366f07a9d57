"""ASGI entry point: the web process serves the app with an ASGI server (uvicorn); the
dashboard's live feed (cleanup.live) is served beside Django, on the event loop.

Django's handler gives each request a thread of its own for its sync parts (a sync view,
closing the response) and starts a new one every time, plus one more to join it: under
load that thread churn cost more than the request. This handler keeps those per-request
threads and hands an idle one to the next request: still one thread per request at a
time, as Django's thread-sensitive code expects, without starting any.
"""

from __future__ import annotations

import gc
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kosuke.settings")

import django
from django.core.handlers.asgi import ASGIHandler

# Idle request threads kept for reuse; more are started while more requests run at once.
IDLE_THREADS_KEPT = 64


class ReusingThreadsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self._idle.pop() if self._idle else ThreadPoolExecutor(1, "request")
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < IDLE_THREADS_KEPT:
                self._idle.append(thread)
            else:
                thread.shutdown(wait=False)


django.setup(set_prefix=False)
django_application = ReusingThreadsASGIHandler()

from chat.fast_path import fast_route  # noqa: E402 - needs Django set up
from cleanup import live  # noqa: E402
from kosuke.asgi_http import answer_or_django  # noqa: E402


async def application(scope, receive, send) -> None:
    """Django, but for the dashboard's live feed (a stream on the event loop alone) and
    the API's hot path (heartbeats and messages with a token, answered on the event loop
    when all is well: chat.fast_path)."""
    if scope["type"] == "http":
        if scope["path"] == live.PATH:
            return await live.live_events(scope, receive, send)
        if (answer := fast_route(scope)) is not None:
            return await answer_or_django(scope, receive, send, answer, django_application)
    return await django_application(scope, receive, send)


# Everything loaded so far lives as long as the process: keep it out of the garbage
# collector's full passes, which otherwise stall requests for tens of milliseconds.
gc.freeze()
