"""A small stand-in for the Docker engine API on a Unix socket, for sweeping more previews
than one machine can run containers: it answers the calls the sweep and the stops make
(version, ping, list with a label filter, stop, remove) from a table of containers in
memory, each stop taking as long as asked. Benchmarks that use it say so in their output.
"""

from __future__ import annotations

import json
import re
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

_CONTAINER = re.compile(r"^(?:/v[\d.]+)?/containers/([^/]+)/(stop|json)$")
_REMOVE = re.compile(r"^(?:/v[\d.]+)?/containers/([^/]+)$")


class FakeEngine:
    def __init__(self, socket_path: Path, *, stop_seconds: float = 0):
        """`stop_seconds`: how long stopping a running container takes (one that ignores
        SIGTERM takes the whole stop timeout); stops wait side by side."""
        self.url = f"unix://{socket_path}"
        self.stop_seconds = stop_seconds
        self.containers: dict[str, dict] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def address_string(self) -> str:
                return "fake-engine"

            def do_GET(self) -> None:
                engine._get(self)

            def do_HEAD(self) -> None:
                engine._answer(self, 200, b"")

            def do_POST(self) -> None:
                engine._post(self)

            def do_DELETE(self) -> None:
                engine._delete(self)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                # A client that closed its connection before the answer (about one stop in
                # a hundred, with two engine workers; not understood yet): the benchmarks
                # count what every stop settled as, so nothing is hidden by staying quiet.
                if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                    super().handle_error(request, client_address)

        self._server = Server(str(socket_path), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, container_id: str, name: str, labels: dict[str, str], state: str = "running"):
        self.containers[container_id] = {
            "Id": container_id,
            "Names": [f"/{name}"],
            "State": state,
            "Labels": labels,
        }

    def running(self) -> int:
        return sum(c["State"] == "running" for c in self.containers.values())

    def _count(self, call: str) -> None:
        with self._lock:
            self.calls[call] = self.calls.get(call, 0) + 1

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlparse(handler.path)
        if url.path.endswith("/version"):
            self._answer(handler, 200, json.dumps({"ApiVersion": "1.41"}).encode())
        elif url.path.endswith("/_ping"):
            self._answer(handler, 200, b"OK")
        elif url.path.endswith("/containers/json"):
            self._count("list")
            filters = json.loads(parse_qs(url.query).get("filters", ["{}"])[0])
            wanted = [label.split("=", 1) for label in filters.get("label", [])]
            listed = [
                c
                for c in self.containers.values()
                if all(c["Labels"].get(key) == value for key, value in wanted)
            ]
            self._answer(handler, 200, json.dumps(listed).encode())
        else:
            self._answer(handler, 404, b'{"message": "not found"}')

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        match = _CONTAINER.match(urlparse(handler.path).path)
        if match and match.group(2) == "stop":
            self._count("stop")
            container = self.containers.get(match.group(1))
            if container is None:
                self._answer(handler, 404, b'{"message": "no such container"}')
                return
            was_running = container["State"] == "running"
            if was_running:
                time.sleep(self.stop_seconds)
            container["State"] = "exited"
            self._answer(handler, 204 if was_running else 304, b"")
        else:
            self._answer(handler, 404, b'{"message": "not found"}')

    def _delete(self, handler: BaseHTTPRequestHandler) -> None:
        match = _REMOVE.match(urlparse(handler.path).path)
        self._count("remove")
        if match and self.containers.pop(match.group(1), None) is not None:
            self._answer(handler, 204, b"")
        else:
            self._answer(handler, 404, b'{"message": "no such container"}')
