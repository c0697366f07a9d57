"""The development run command (`./scripts/run`): the whole system on one machine.

PostgreSQL and Redis are real servers from pip packages, started here with their data in
`.local/` (or KOSUKE_STATE_DIR; kept across restarts) unless DATABASE_URL / REDIS_URL
are set. The processes
in `Procfile` run under honcho; Ctrl-C stops them all, then the embedded servers.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from kosuke import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
PROCFILE = BASE_DIR / "Procfile"
STATE_DIR = Path(os.environ.get("KOSUKE_STATE_DIR", BASE_DIR / ".local")).resolve()


def _first_start_credentials() -> None:
    """Create the development superuser and its API token once, and print them."""
    from django.contrib.auth.models import User

    from chat.tokens import api_token_create

    if User.objects.filter(username="admin").exists():
        print("dev: superuser 'admin' exists (python manage.py changepassword admin to reset)")
        return
    password = secrets.token_urlsafe(12)
    admin = User.objects.create_superuser("admin", "admin@localhost", password)
    _token, raw_token = api_token_create(user=admin, name="development")
    print(f"dev: superuser 'admin', password {password}")
    print(f"dev: API token {raw_token}")


def _flower_credentials() -> str:
    """user:password for Flower's basic auth, made once and kept in the state folder."""
    saved = STATE_DIR / "flower-auth"
    if not saved.exists():
        saved.write_text(f"admin:{secrets.token_urlsafe(12)}")
        saved.chmod(0o600)
    return saved.read_text().strip()


def _engine_report() -> None:
    from previews.engine import EngineError, engine
    from previews.engines import engines

    for name, config in engines().items():
        try:
            engine(name).ping()
            print(f"dev: Docker engine {name} at {config.url} answers")
        except EngineError as exc:
            print(f"dev: WARNING previews need a Docker engine and {name} does not answer: {exc}")
            print(
                "dev: everything else runs; start the engine or set DOCKER_HOST "
                "(or PREVIEW_ENGINES), then restart"
            )


def _procfile(engine_names: list[str]) -> Path:
    """The Procfile for honcho, its `engine` process once per engine: engine-<name>."""
    lines = []
    for line in PROCFILE.read_text().splitlines():
        if line.startswith("engine:"):
            command = line.split(": ", 1)[1]
            lines += [
                f"engine-{name}: {command.replace('$KOSUKE_ENGINE', name)}" for name in engine_names
            ]
        else:
            lines.append(line)
    procfile = STATE_DIR / "Procfile"
    procfile.write_text("\n".join(lines) + "\n")
    return procfile


def main() -> int:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (BASE_DIR / "staticfiles").mkdir(exist_ok=True)
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("WEB_PORT", "8000")
    os.environ.setdefault("FLOWER_PORT", "5555")
    os.environ.setdefault("FLOWER_BASIC_AUTH", _flower_credentials())
    os.environ["KOSUKE_STATE_DIR"] = str(STATE_DIR)
    postgres = redis_process = None
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"], postgres = embedded.postgres_start(
            STATE_DIR / "postgres", delete_on_exit=False
        )
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"], redis_process = embedded.redis_start(
            STATE_DIR / "redis", port=embedded.free_port(), persist=True
        )
    print(f"dev: DATABASE_URL={os.environ['DATABASE_URL']}")
    print(f"dev: REDIS_URL={os.environ['REDIS_URL']}")
    # For ./scripts/manage in a second terminal: the same stores and settings, while this runs.
    dev_env = STATE_DIR / "dev.env"
    names = ("DEBUG", "DATABASE_URL", "REDIS_URL", "KOSUKE_STATE_DIR")
    dev_env.write_text("".join(f"{name}={shlex.quote(os.environ[name])}\n" for name in names))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kosuke.settings")

    import django
    from django.core.management import call_command

    django.setup()
    from django.conf import settings

    from previews.engines import engines

    os.environ.setdefault("ENGINE_CONCURRENCY", str(settings.ENGINE_CONCURRENCY))  # Procfile
    call_command("migrate", interactive=False, verbosity=1)
    _first_start_credentials()
    _engine_report()
    web = f"http://127.0.0.1:{os.environ['WEB_PORT']}"
    print(f"dev: web on {web}/ops/ (the dashboard), {web}/admin/ and {web}/api/docs")
    print(
        f"dev: Flower on http://127.0.0.1:{os.environ['FLOWER_PORT']}/ "
        f"(basic auth {os.environ['FLOWER_BASIC_AUTH']})"
    )

    procfile = _procfile(list(engines()))
    honcho = subprocess.Popen(  # noqa: S603
        ["honcho", "start", "-f", str(procfile), "-d", str(BASE_DIR)],  # noqa: S607
        cwd=BASE_DIR,
    )
    # Ctrl-C reaches every process of the terminal and honcho stops its children; a
    # SIGINT or SIGTERM to this process alone is passed to honcho (which stops once).
    # Either way this process waits for them, then stops the embedded servers.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: honcho.terminate())
    try:
        return honcho.wait()
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
        if postgres is not None:
            postgres.cleanup()
        dev_env.unlink(missing_ok=True)
        print("dev: stopped")


if __name__ == "__main__":
    sys.exit(main())
