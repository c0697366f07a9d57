"""The Docker engine adapter: the only module that imports the Docker SDK.

Every call has a timeout. "Not found" and "already stopped" are success. Everything the
SDK raises becomes an `EngineError`: a `PermanentEngineError` when retrying cannot help (a
missing image, a refused request), the plain one when it can (an unreachable or overloaded
engine).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
import docker.errors
import requests
from django.conf import settings

from previews.engines import EngineConfig, default_engine_name, engine_config

# Labels every preview container carries; `kosuke.keep=true` opts out of automatic stops.
LABEL_TYPE = "kosuke.type"
LABEL_PROJECT = "kosuke.project_id"
LABEL_SESSION = "kosuke.session_id"
LABEL_MANAGED_BY = "kosuke.managed_by"
# The session's database id: project and session ids are unique per owner only.
LABEL_SESSION_PK = "kosuke.session_pk"
LABEL_KEEP = "kosuke.keep"
LABEL_ENGINE = "kosuke.engine"
_LABELS_READ = {LABEL_PROJECT, LABEL_SESSION, LABEL_SESSION_PK, LABEL_KEEP, LABEL_ENGINE}


class EngineError(Exception):
    """The Docker engine could not do what was asked; retrying may help."""

    permanent = False


class PermanentEngineError(EngineError):
    """The Docker engine refused in a way no retry can fix (a missing image, a bad request)."""

    permanent = True


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str  # Docker's: created, running, paused, restarting, exited, dead
    labels: dict[str, str]
    engine: str  # the engine's name
    created_at: datetime | None = None  # None: the engine did not say

    @property
    def is_running(self) -> bool:
        return self.state in {"running", "restarting", "paused"}

    @property
    def is_kept(self) -> bool:
        return self.labels.get(LABEL_KEEP, "").lower() == "true"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def project_id(self) -> str:
        return self.labels.get(LABEL_PROJECT, "")

    @property
    def session_id(self) -> str:
        return self.labels.get(LABEL_SESSION, "")

    @property
    def session_pk(self) -> int | None:
        """The chat session this container belongs to, by its label; None if unreadable."""
        label = self.labels.get(LABEL_SESSION_PK, "")
        return int(label) if label.isdigit() else None

    def as_json(self) -> list:
        """The container as a task's reply carries it, compact (a sweep's list call carries
        thousands): the labels this project reads, the engine left to the reply."""
        labels = {key: value for key, value in self.labels.items() if key in _LABELS_READ}
        created_at = self.created_at.timestamp() if self.created_at else None
        return [self.id, self.name, self.state, labels, created_at]

    @classmethod
    def from_json(cls, data: list, *, engine: str) -> Container:
        container_id, name, state, labels, created_at = data
        created = datetime.fromtimestamp(created_at, UTC) if created_at is not None else None
        return cls(container_id, name, state, labels, engine, created)


def deployment_labels() -> dict[str, str]:
    """The labels of every preview container of this deployment."""
    return {LABEL_TYPE: "preview", LABEL_MANAGED_BY: settings.PREVIEW_MANAGED_BY}


def preview_labels(*, session_pk: int, project_id: str, session_id: str) -> dict[str, str]:
    """The labels of one session's preview containers."""
    return {
        **deployment_labels(),
        LABEL_SESSION_PK: str(session_pk),
        LABEL_PROJECT: project_id,
        LABEL_SESSION: session_id,
    }


class Engine:
    """One Docker engine of PREVIEW_ENGINES (previews.engines)."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.name, self.url = config.name, config.url
        self._client: docker.DockerClient | None = None

    def __repr__(self) -> str:
        return f"Engine({self.name!r}, {self.url!r})"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SDK and transport errors into EngineError, saying where we looked."""
        try:
            yield
        except docker.errors.APIError as exc:
            permanent = exc.is_client_error() and exc.status_code not in (408, 429)
            error = PermanentEngineError if permanent else EngineError
            raise error(
                f"Docker engine {self.name} ({self.url}) refused to {action}: "
                f"{exc.explanation or exc}"
            ) from exc
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            self._client = None  # reconnect next time
            raise EngineError(
                f"Docker engine {self.name} unreachable at {self.url} "
                f"(PREVIEW_ENGINES or DOCKER_HOST): {exc}"
            ) from exc

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._errors("connect"):
                self._client = docker.DockerClient(
                    base_url=self.url,
                    timeout=settings.DOCKER_TIMEOUT_SECONDS,
                    # The engine worker's threads call at once: a connection each, kept.
                    max_pool_size=settings.ENGINE_CONCURRENCY,
                )
        return self._client

    def ping(self) -> None:
        """Raise EngineError unless the engine answers."""
        with self._errors("answer a ping"):
            self.client.ping()

    def containers(self, labels: dict[str, str]) -> list[Container]:
        """All containers (running or not) carrying every one of `labels`: one list call."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        with self._errors("list containers"):
            summaries = self.client.api.containers(all=True, filters=filters)
        return [
            Container(
                id=summary["Id"],
                name=summary["Names"][0].lstrip("/") if summary.get("Names") else "",
                state=summary["State"],
                labels=summary.get("Labels") or {},
                engine=self.name,
                created_at=(
                    datetime.fromtimestamp(summary["Created"], UTC)
                    if summary.get("Created")
                    else None
                ),
            )
            for summary in summaries
        ]

    def create(self, *, name: str, labels: dict[str, str], environment: dict[str, str]) -> str:
        """Create (not start) a preview container from PREVIEW_IMAGE; returns its id.

        The name is unique per engine, so two racing creates cannot make two containers:
        the loser gets the winner's container, once its labels show it is the same preview.
        """
        with self._errors("create a container"):
            try:
                container = self.client.api.create_container(
                    image=settings.PREVIEW_IMAGE,
                    name=name,
                    labels={**dict(self.config.labels), **labels, LABEL_ENGINE: self.name},
                    environment=environment,
                    host_config=self.client.api.create_host_config(
                        init=True,  # PID 1 forwards SIGTERM, so stops are quick
                        mem_limit=f"{settings.PREVIEW_MEMORY_MB}m",
                        nano_cpus=int(settings.PREVIEW_CPUS * 1e9),
                        network_mode=self.config.network or None,
                    ),
                )
                return container["Id"]
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
            existing = self.client.api.inspect_container(name)
        if not labels.items() <= (existing["Config"].get("Labels") or {}).items():
            raise PermanentEngineError(
                f"container name {name} on engine {self.name} is taken by another container"
            )
        return existing["Id"]

    def start(self, container_id: str) -> None:
        """Start a container; one that already runs is fine."""
        with self._errors(f"start container {container_id[:12]}"):
            self.client.api.start(container_id)

    def stop(self, container_id: str) -> None:
        """Stop a container (SIGTERM, then SIGKILL after PREVIEW_STOP_TIMEOUT_SECONDS).

        A container that is already stopped or gone counts as stopped.
        """
        with self._errors(f"stop container {container_id[:12]}"):
            try:
                self.client.api.stop(container_id, timeout=settings.PREVIEW_STOP_TIMEOUT_SECONDS)
            except docker.errors.NotFound:
                return

    def remove(self, container_id: str) -> None:
        """Remove a container with the anonymous volumes created with it, stopping it first
        if needed; one already gone is fine."""
        with self._errors(f"remove container {container_id[:12]}"):
            try:
                self.client.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                return


def engine(name: str | None = None) -> Engine:
    """The engine named `name` (default: the first configured). EngineError if
    PREVIEW_ENGINES names no such engine (it was taken out: its previews wait for it)."""
    config = engine_config(name or default_engine_name())
    if config is None:
        raise EngineError(f"Docker engine {name} is not in PREVIEW_ENGINES")
    return engine_at(config)


@functools.cache
def engine_at(config: EngineConfig) -> Engine:
    """One client per engine and process (`engine_at.cache_clear()` forgets them)."""
    return Engine(config)
