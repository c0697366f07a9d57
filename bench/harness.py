"""Django on throwaway embedded servers for the benchmarks (unless DATABASE_URL / REDIS_URL
are set), migrated and ready."""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kosuke import embedded

_servers: list[object] = []  # kept alive until the benchmark exits


def django_ready(*, redis: bool = False) -> None:
    state = Path(tempfile.mkdtemp(prefix="kosuke-bench-"))
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"], server = embedded.postgres_start(
            state / "pg", delete_on_exit=True
        )
        _servers.append(server)
    if redis and not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"], process = embedded.redis_start(
            state / "redis", port=embedded.free_port(), persist=False
        )
        _servers.append(process)
        atexit.register(process.terminate)
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("PREVIEW_MANAGED_BY", "kosuke-bench")
    os.environ["DJANGO_SETTINGS_MODULE"] = "kosuke.settings"

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
