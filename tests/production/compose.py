"""The production compose stack, run for real: the image `scripts/build-image` built, the
real docker-compose.yml (with docker-compose.local.yml where Docker Hub is out of reach),
driven from the host through its published ports and `compose exec`, like an operator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_IMAGE = "kosuke-preview-cleanup:latest"
LOCAL_STORE_IMAGES = ("kosuke-local/postgres:15", "kosuke-local/redis:7")
# Seconds from `docker compose up -d` to each milestone, for the summary at the end.
TIMINGS: dict[str, float] = {}


def compose_command() -> list[str] | None:
    """`docker compose` (v2) or `docker-compose` (v1, Debian's), whichever is installed."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


class ComposeStack:
    """One compose project in a folder of its own (its `.env` is the operator's settings)."""

    def __init__(self, folder: Path, name: str, settings: dict[str, str], command: list[str]):
        self.folder, self.name, self.settings = folder, name, settings
        for file in ("docker-compose.yml", "docker-compose.local.yml"):
            shutil.copy(ROOT / file, folder / file)
        (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        self._compose = [
            *command,
            "--project-name",
            name,
            "--file",
            "docker-compose.yml",
            "--file",
            "docker-compose.local.yml",
        ]
        self.web = f"http://{settings['WEB_BIND']}"
        self.flower = f"http://{settings['FLOWER_BIND']}"

    def up(self) -> None:
        """`up -d`; `started` is when it began."""
        self.started = time.monotonic()
        self.compose("up", "-d", timeout=300)

    def compose(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> str:
        result = subprocess.run(
            [*self._compose, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COMPOSE_INTERACTIVE_NO_CLI": "1", **(env or {})},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        """`python manage.py ...` in the running web container; `env`'s values pass through
        this process's environment, not the command line."""
        options = [item for key in env or {} for item in ("-e", key)]
        return self.compose(
            "exec", "-T", *options, "web", "python", "manage.py", *args, env=env
        ).strip()

    def sql(self, query: str, **params: str) -> str:
        """A query on the stack's database, through psql in its postgres container; write
        :'name' in `query` for the value of `name` (psql quotes it). By `docker exec`:
        docker-compose 1.x's `exec -T` does not pass standard input on."""
        container = self.compose("ps", "-q", "postgres").strip()
        variables = [item for key, value in params.items() for item in ("-v", f"{key}={value}")]
        result = subprocess.run(
            [
                shutil.which("docker") or "docker",
                "exec",
                "-i",
                container,
                "psql",
                "-U",
                "kosuke",
                "-d",
                "kosuke",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                *variables,
                "-f",
                "-",
            ],
            input=query,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """An HTTP request as the reverse proxy in front of the stack would pass it on; the
        answer's header names in lower case."""
        request = urllib.request.Request(  # noqa: S310 - the http:// URLs of this stack
            url,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"X-Forwarded-Proto": "https", "Content-Type": "application/json"}
            | (headers or {}),
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, _lowercase(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, _lowercase(error.headers), error.read()
        except (urllib.error.URLError, ConnectionError) as error:
            return 0, {}, str(error).encode()  # nothing listening yet, or a reset

    def health(self, docker_client) -> dict[str, str]:
        """Each service's container state: its health where it has a check, else its status
        (and exit code once it exited)."""
        states = {}
        for container in docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.name}"}
        ):
            state = container.attrs["State"]
            service = container.labels["com.docker.compose.service"]
            if "Health" in state:
                states[service] = state["Health"]["Status"]
            elif state["Status"] == "exited":
                states[service] = f"exited {state['ExitCode']}"
            else:
                states[service] = state["Status"]
        return states

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def _lowercase(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 1)
