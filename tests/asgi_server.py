"""The project's ASGI application (kosuke.asgi) served by a real uvicorn in a thread of
the test process, on the test database and Redis: what the run command and compose
serve, including the live feed that only exists under ASGI."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from kosuke import embedded
from tests.polling import wait_for


class AsgiServer:
    def __init__(self) -> None:
        from kosuke.asgi import application, django_application

        # Middleware reads settings when it is built (WhiteNoise: where static files are):
        # built again for this test's settings, whenever kosuke.asgi was first imported.
        django_application.load_middleware(is_async=True)

        self.port = embedded.free_port()
        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            # As the Dockerfile's command: open live streams are cut at shutdown, so none
            # outlives its server (and its test) holding a subscription.
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[AsgiServer]:
        self._thread.start()
        wait_for(lambda: self._server.started, timeout=15, what="uvicorn to start")
        try:
            yield self
        finally:
            self._server.should_exit = True
            self._thread.join(timeout=15)
            assert not self._thread.is_alive(), "uvicorn did not stop within 15 s"

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
