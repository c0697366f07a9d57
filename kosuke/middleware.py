"""Django's middleware, without a thread per hook under ASGI.

Django's MiddlewareMixin runs each middleware's `process_request` and `process_response`
in a worker thread when it serves ASGI: with the usual stack, a dozen hops to a thread
and back per request, and a new thread per request for them. That, not the database,
capped the API at about 100 requests/s. These subclasses call the hooks on the event
loop where they do no I/O (headers, cookies, host checks, lazy objects), and still in a
thread where they might (saving a session that was used, storing messages). Sync
requests (the admin's views under WSGI, the test client) run as before.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse
from django.middleware import clickjacking, common, csrf, security
from whitenoise.middleware import WhiteNoiseMiddleware


class _OnTheLoop:
    """Hooks called directly in async mode; `_response_needs_io` says when the response
    hook may touch the database, and then it runs in a thread as Django would."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if not hasattr(self, "process_response"):
            return response
        if self._response_needs_io(request):
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)

    def _response_needs_io(self, request: HttpRequest) -> bool:
        return False


class SecurityMiddleware(_OnTheLoop, security.SecurityMiddleware):
    pass


class SessionMiddleware(_OnTheLoop, sessions.SessionMiddleware):
    def _response_needs_io(self, request: HttpRequest) -> bool:
        return request.session.accessed  # it may be saved, or its key looked up


class CommonMiddleware(_OnTheLoop, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(_OnTheLoop, csrf.CsrfViewMiddleware):
    async def process_view(self, request, callback, callback_args, callback_kwargs):
        # A coroutine, so Django calls it on the loop: it reads headers and cookies.
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(_OnTheLoop, auth.AuthenticationMiddleware):
    pass  # request.user stays lazy: read from a thread (sync views, session auth)


class MessageMiddleware(_OnTheLoop, messages.MessageMiddleware):
    def _response_needs_io(self, request: HttpRequest) -> bool:
        storage = getattr(request, "_messages", None)
        return bool(storage and (storage.used or storage.added_new))  # stored in the session


class XFrameOptionsMiddleware(_OnTheLoop, clickjacking.XFrameOptionsMiddleware):
    pass


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise (the admin's static files), sync and async: a static file is looked up
    in memory on the loop and served from a thread."""

    sync_capable = async_capable = True

    def __init__(self, get_response=None, **kwargs) -> None:
        super().__init__(get_response, **kwargs)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if iscoroutinefunction(self):
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # development: looks on disk
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
