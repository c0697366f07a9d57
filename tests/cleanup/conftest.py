from __future__ import annotations

import pytest

from previews.engine import engine
from tests.engine_proxy import EngineProxy
from tests.engines import engines_configure


@pytest.fixture
def engine_proxy(previews_on_docker, tmp_path_factory, settings):
    """A proxy to the real engine that fails the requests a test asks it to: the engine
    named `proxy`."""
    proxy = EngineProxy(tmp_path_factory.mktemp("proxy") / "docker.sock", engine().url)
    engines_configure(settings, proxy=proxy.url)
    yield proxy
    proxy.close()
