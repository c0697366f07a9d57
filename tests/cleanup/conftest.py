from __future__ import annotations

import pytest

from previews.engine import engine
from tests.engine_proxy import EngineProxy


@pytest.fixture
def engine_proxy(previews_on_docker, tmp_path_factory):
    """A proxy to the real engine that fails the requests a test asks it to."""
    proxy = EngineProxy(tmp_path_factory.mktemp("proxy") / "docker.sock", engine().url)
    yield proxy
    proxy.close()
