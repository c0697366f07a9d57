"""The engines tests configure (PREVIEW_ENGINES): `local`, the real engine at DOCKER_HOST,
first and so the default, and others at URLs a test chooses (a proxy that fails chosen
requests, a socket where nothing answers)."""

from __future__ import annotations

import os

from previews.engine import engine_at
from previews.engines import DEFAULT_SOCKET

# The engines the `worker` fixture serves (it consumes their queues).
TEST_ENGINES = ("local", "proxy", "gone")


def engines_configure(settings, **urls: str) -> None:
    """Configure `local` and the engines `urls` names (name -> Docker URL)."""
    local = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    engines = {"local": local, **urls}
    settings.PREVIEW_ENGINES = ",".join(f"{name}={url}" for name, url in engines.items())
    engine_at.cache_clear()
