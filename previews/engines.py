"""The Docker engines of this deployment (PREVIEW_ENGINES); previews.placement says where
a new preview goes.

Each engine has a name, which previews record and which names its queue (`engine.<name>`):
only the workers started next to an engine (`celery -A kosuke worker -Q engine.<name>`,
with that engine's socket) reach it. Without PREVIEW_ENGINES there is one engine, `local`,
at DOCKER_HOST (or the default socket), so nothing changes for a single host.

PREVIEW_ENGINES: comma-separated `name=url`, each with optional settings after `?`:
`capacity=N` (previews it runs at most; default PREVIEW_ENGINE_CAPACITY), `network=none`
(the network mode of its containers; default Docker's bridge) and `label=key:value`
(repeatable: labels its containers carry as well), e.g.
`a=unix:///var/run/docker.sock,b=tcp://10.0.0.7:2375?capacity=500&label=zone:b`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from django.conf import settings

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DEFAULT_NAME = "local"
QUEUE_PREFIX = "engine."
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class EngineConfigError(ValueError):
    """PREVIEW_ENGINES cannot be read; the message says which part and why."""


@dataclass(frozen=True)
class EngineConfig:
    name: str
    url: str
    capacity: int
    network: str = ""  # the network mode of its containers; "": Docker's default
    labels: tuple[tuple[str, str], ...] = ()  # added to its containers' labels

    @property
    def queue(self) -> str:
        return engine_queue(self.name)


def engine_queue(name: str) -> str:
    """The queue of the workers that serve engine `name`."""
    return f"{QUEUE_PREFIX}{name}"


def engines_parse(text: str, *, default_url: str, default_capacity: int) -> dict[str, EngineConfig]:
    """PREVIEW_ENGINES as configurations by name (see the module's docstring); one engine
    `local` at `default_url` when `text` is empty. EngineConfigError says what is wrong."""
    if not text.strip():
        return {DEFAULT_NAME: EngineConfig(DEFAULT_NAME, default_url, default_capacity)}
    parsed: dict[str, EngineConfig] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, equals, rest = entry.partition("=")
        if not equals or not rest:
            raise EngineConfigError(f"PREVIEW_ENGINES: {entry!r} is not name=url")
        if not _NAME.fullmatch(name):
            raise EngineConfigError(
                f"PREVIEW_ENGINES: engine name {name!r} must be lowercase letters, digits "
                "and dashes (at most 40)"
            )
        if name in parsed:
            raise EngineConfigError(f"PREVIEW_ENGINES: engine {name!r} is named twice")
        url, _, query = rest.partition("?")
        options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        unknown = set(options) - {"capacity", "network", "label"}
        if unknown:
            raise EngineConfigError(
                f"PREVIEW_ENGINES: engine {name!r}: unknown setting(s) {', '.join(sorted(unknown))}"
                " (capacity, network, label)"
            )
        capacity = options.get("capacity", [str(default_capacity)])[-1]
        if not capacity.isdigit() or int(capacity) < 1:
            raise EngineConfigError(
                f"PREVIEW_ENGINES: engine {name!r}: capacity must be a positive whole number"
            )
        labels = []
        for label in options.get("label", []):
            key, colon, value = label.partition(":")
            if not colon or not key:
                raise EngineConfigError(
                    f"PREVIEW_ENGINES: engine {name!r}: label {label!r} is not key:value"
                )
            labels.append((key, value))
        parsed[name] = EngineConfig(
            name,
            url,
            int(capacity),
            network=options.get("network", [""])[-1],
            labels=tuple(labels),
        )
    if not parsed:
        raise EngineConfigError("PREVIEW_ENGINES names no engine")
    return parsed


def engines() -> dict[str, EngineConfig]:
    """The engines of this deployment by name, in the order configured."""
    return _engines(
        settings.PREVIEW_ENGINES,
        settings.DOCKER_HOST or DEFAULT_SOCKET,
        settings.PREVIEW_ENGINE_CAPACITY,
    )


@functools.cache
def _engines(text: str, default_url: str, default_capacity: int) -> dict[str, EngineConfig]:
    return engines_parse(text, default_url=default_url, default_capacity=default_capacity)


def engine_config(name: str) -> EngineConfig | None:
    """The configuration of engine `name`; None if PREVIEW_ENGINES names no such engine."""
    return engines().get(name)


def default_engine_name() -> str:
    """The first engine configured (the only one on a single host)."""
    return next(iter(engines()))
