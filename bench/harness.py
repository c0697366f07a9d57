"""What the benchmarks share: Django on throwaway embedded servers (unless DATABASE_URL /
REDIS_URL are set), migrated and ready; the web process as compose serves it; live
previews on the fake engine."""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kosuke import embedded

ROOT = Path(__file__).resolve().parent.parent

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


def previews_open(count: int) -> None:
    """Sessions s0..s<count-1> of the user `bench` in project `bench`, each with its
    preview opened on the engine at DOCKER_HOST (8 at a time; after django_ready)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth.models import User
    from django.db import connection

    from chat.models import ChatSession
    from previews.services import preview_open

    owner, _ = User.objects.get_or_create(username="bench")
    sessions = [
        ChatSession.objects.create(owner=owner, project_id="bench", session_id=f"s{n}")
        for n in range(count)
    ]

    def open_one(session: ChatSession) -> None:
        try:
            preview_open(session=session)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_one, sessions))


def procfile_start(
    name: str, logs: Path, *, as_name: str = "", queues: str = "", **env: str
) -> subprocess.Popen:
    """The Procfile's process `name`, as ./scripts/run starts it (`env`: settings of its
    own, also filling the command's $VARIABLES); `as_name` renames a worker (-n) and its
    log, for several of one kind; `queues` gives a worker other queues to serve (-Q)."""
    from tests.procfile import procfile_command

    command = procfile_command(name)
    if as_name:
        command = re.sub(r"-n \S+", f"-n {as_name}@%h", command)
    if queues:
        command = re.sub(r"-Q \S+", f"-Q {queues}", command)
    return subprocess.Popen(  # noqa: S603 - the Procfile's own command
        ["bash", "-c", f"exec {command}"],  # noqa: S607
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=(logs / f"{as_name or name}.log").open("w"),
        stderr=subprocess.STDOUT,
    )


def web_start(port: int, *, workers: int = 1, **env: str) -> subprocess.Popen:
    """The Dockerfile's command, on 127.0.0.1 (`env`: settings of its own)."""
    command = ["uvicorn", "kosuke.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--proxy-headers", "--forwarded-allow-ips", "*"]
    command += ["--lifespan", "off", "--timeout-graceful-shutdown", "10"]
    env = {
        **os.environ,
        # As compose sets them (docker-compose.yml, web).
        "WEB_CONCURRENCY": str(workers),
        "UVICORN_ACCESS_LOG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    log = Path(tempfile.mkdtemp(prefix="kosuke-web-")) / "web.log"
    print(f"web process log: {log}")
    web = subprocess.Popen(  # noqa: S603 - a fixed command
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return web
        except OSError:
            time.sleep(0.2)
    web.kill()
    raise SystemExit("the web process did not answer /healthz within 60 s")


def fake_engine_use():
    """A fake Docker engine (fake_engine.py) on a socket of its own: the engine `local`,
    where this process's previews now go (after django_ready)."""
    from django.conf import settings
    from fake_engine import FakeEngine

    from previews.engine import engine_at

    fake = FakeEngine(Path(tempfile.mkdtemp(prefix="kosuke-bench-")) / "docker.sock")
    settings.DOCKER_HOST = fake.url
    engine_at.cache_clear()
    return fake


def live_previews_add(fake, owner_pk: int, start: int, end: int, engine: str = "local") -> None:
    """Live sessions `start`..`end` with running previews on the fake engine, which is the
    engine named `engine`."""
    from django.db import connection

    from previews.engine import preview_labels

    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH s AS (
                INSERT INTO chat_chatsession (owner_id, project_id, session_id, title,
                    created_at, updated_at, last_activity_at)
                SELECT %s, 'live', 's' || n, '', now(), now(), now()
                FROM generate_series(%s, %s) AS n RETURNING id, session_id)
            INSERT INTO previews_preview (session_id, state, state_changed_at, started_at,
                engine, last_stop_reason, last_stop_detail, last_error, claim_token, start_detail)
            SELECT id, 'running', now() - interval '3 hours', now() - interval '3 hours',
                %s, '', '', '', '', 'opened' FROM s
            RETURNING session_id
            """,
            [owner_pk, start + 1, end, engine],
        )
        pks = [row[0] for row in cursor.fetchall()]
    for pk in pks:
        labels = preview_labels(session_pk=pk, project_id="live", session_id=f"s{pk}")
        fake.add(f"{pk:064x}", f"kosuke-preview-bench-{pk}", labels)


def history_add(owner_pk: int, count: int) -> None:
    """`count` sessions inactive for 30 days, their previews stopped long ago."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH s AS (
                INSERT INTO chat_chatsession (owner_id, project_id, session_id, title,
                    created_at, updated_at, last_activity_at)
                SELECT %s, 'old', 'h' || n, '', now(), now(), now() - interval '30 days'
                FROM generate_series(1, %s) AS n RETURNING id)
            INSERT INTO previews_preview (session_id, state, state_changed_at, engine,
                last_stop_reason, last_stop_detail, last_error, claim_token, start_detail)
            SELECT id, 'stopped', now(), '', 'inactive', '', '', '', '' FROM s
            """,
            [owner_pk, count],
        )
