"""What the engines list, and the stored previews made to agree with it.

One list call per engine finds every preview container of this deployment; the rows are
compared with it in Python and only those that disagree are written, with one UPDATE per
kind of change. A conclusion drawn from a listing never overrides a row that changed
after it was read (an open or stop that happened meanwhile wins).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.db.models.fields.tuple_lookups import Tuple, TupleIn
from django.utils import timezone

from chat.heartbeat_cache import stop_inputs_changed
from chat.models import ChatSession
from previews.engine import LABEL_ENGINE, Container, EngineError
from previews.engines import engines
from previews.models import ALLOWED_TRANSITIONS, Preview, PreviewState, StopReason
from previews.reach import EngineReach

logger = logging.getLogger(__name__)

# A start or stop that has not finished after this long was interrupted (a worker died):
# longer than a stop task may run (its hard time limit), and at least 5 minutes.
TRANSITION_STALE_AFTER = timedelta(seconds=max(300, settings.STOP_TASK_TIME_LIMIT_SECONDS + 60))
OUTSIDE = "found running: started outside the system"
# Rows per UPDATE: two parameters each, well below PostgreSQL's 65,535.
_CHUNK = 5000


@dataclass
class EngineListing:
    """The preview containers of this deployment on each engine, from one list call each."""

    # By (engine name, session pk); the pk is None where the label is unreadable.
    containers: dict[tuple[str, int | None], list[Container]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # engine name -> error
    reached: list[str] = field(default_factory=list)

    @property
    def list_calls(self) -> int:
        return len(self.reached) + len(self.unreachable)

    def running_by_engine(self) -> dict[str, int]:
        """Running preview containers on each engine reached."""
        running = dict.fromkeys(self.reached, 0)
        for (name, _), containers in self.containers.items():
            running[name] += sum(container.is_running for container in containers)
        return running

    def containers_of(self, preview: Preview) -> list[Container]:
        """The preview's containers on its own engine."""
        return self.containers.get((preview.engine, preview.session_id), [])


def engines_list(names: Iterable[str], reach: EngineReach) -> EngineListing:
    """List every engine once, all at once; an engine that fails is recorded, the others
    still listed."""
    listing = EngineListing()
    names = set(names) - {""}
    configured = engines()
    for name in sorted(names - set(configured)):
        listing.unreachable[name] = f"engine {name} is not in PREVIEW_ENGINES"
    containers: dict[tuple[str, int | None], list[Container]] = defaultdict(list)
    for name, listed in reach.list(sorted(names & set(configured))).items():
        if isinstance(listed, EngineError):
            logger.error("engine %s: %s", name, listed)
            listing.unreachable[name] = str(listed)
            continue
        listing.reached.append(name)
        for container in listed:
            containers[name, container.session_pk].append(container)
    listing.containers = dict(containers)
    return listing


def orphans_find(
    listing: EngineListing, *, live_engines: dict[int, str], now: datetime
) -> list[Container]:
    """Containers of this deployment no preview owns, once older than
    ORPHAN_MIN_AGE_MINUTES (an open may still be recording its own): their session is gone
    (deleted, or never known), or this engine created them (their kosuke.engine label)
    and their preview has since moved to another engine or to none. Containers labelled
    kosuke.keep=true are never orphans. `live_engines`: the engine of each preview read as
    not stopped; the other sessions are looked up (one query)."""
    others = {pk for _name, pk in listing.containers if pk is not None and pk not in live_engines}
    owners = dict(live_engines)
    if others:
        rows = ChatSession.objects.filter(pk__in=others).values_list("pk", "preview__engine")
        owners |= {pk: engine or "" for pk, engine in rows}
    young = now - timedelta(minutes=settings.ORPHAN_MIN_AGE_MINUTES)

    def unowned(container: Container, name: str, session_pk: int | None) -> bool:
        owner = owners.get(session_pk)
        if owner is None:  # the session is gone
            return True
        # The same engine may be named twice: only a container this name made is left over.
        return owner != name and container.labels.get(LABEL_ENGINE) == name

    return [
        container
        for (name, session_pk), containers in listing.containers.items()
        for container in containers
        if unowned(container, name, session_pk)
        and not container.is_kept
        and not (container.created_at and container.created_at > young)
    ]


def previews_past_retention(
    listing: EngineListing, *, live: set[int], now: datetime
) -> list[tuple[Preview, list[Container]]]:
    """Previews stopped for longer than PREVIEW_RETENTION_HOURS whose containers are still
    on their engine, with those containers, longest stopped first (one query). Sessions in
    `live` have a preview not stopped: none of theirs."""
    if not settings.PREVIEW_RETENTION_HOURS:
        return []
    idle = {
        key: containers
        for key, containers in listing.containers.items()
        if key[1] is not None
        and key[1] not in live
        and not any(container.is_running or container.is_kept for container in containers)
    }
    cutoff = now - timedelta(hours=settings.PREVIEW_RETENTION_HOURS)
    stopped_long_ago = Preview.objects.filter(
        session_id__in={session_pk for _name, session_pk in idle},
        state=PreviewState.STOPPED,
        stopped_at__lt=cutoff,
    ).order_by("stopped_at")
    return [
        (preview, idle[preview.engine, preview.session_id])
        for preview in stopped_long_ago.select_related("session")
        if (preview.engine, preview.session_id) in idle
    ]


def sessions_running_elsewhere(listing: EngineListing, *, known: set[int]) -> set[int]:
    """Sessions not in `known` (the previews read as not stopped) with a running container:
    started outside the system, or their preview was stored as stopped by mistake."""
    return {
        session_pk
        for (_name, session_pk), containers in listing.containers.items()
        if session_pk is not None
        and session_pk not in known
        and any(container.is_running for container in containers)
    }


@dataclass(frozen=True)
class _Change:
    to: str
    fields: dict[str, Any]


def _change(preview: Preview, containers: list[Container], now: datetime) -> _Change | None:
    """How the row must change to agree with `containers`, or None if it agrees.

    A preview whose containers all exited is stopped (reason EXITED); one whose container
    runs although we thought it stopped is running; a start or stop interrupted for longer
    than TRANSITION_STALE_AFTER is settled by what the engine shows.
    """
    state = preview.state
    stale = now - preview.state_changed_at > TRANSITION_STALE_AFTER
    if any(container.is_running for container in containers):
        if state == PreviewState.STOPPED:  # started behind our back: it runs from now
            return _Change(PreviewState.RUNNING, {"started_at": now, "start_detail": OUTSIDE})
        if state == PreviewState.FAILED or (
            stale and state in (PreviewState.STOPPING, PreviewState.STARTING)
        ):
            # It runs: whatever went wrong before is over.
            return _Change(PreviewState.RUNNING, {"claim_token": "", "last_error": ""})
        return None
    if state == PreviewState.STARTING:
        if not stale:
            return None
        fields = Preview.stop_fields(
            now=now, reason=StopReason.FAILED_START, detail="the start was interrupted"
        )
        return _Change(PreviewState.FAILED, fields)
    if state == PreviewState.FAILED:
        # A failed start with nothing running is simply stopped; its reason stays.
        return _Change(PreviewState.STOPPED, {"claim_token": ""})
    if state == PreviewState.RUNNING or (state == PreviewState.STOPPING and stale):
        fields = Preview.stop_fields(
            now=now, reason=StopReason.EXITED, detail="the containers exited on their own"
        )
        return _Change(PreviewState.STOPPED, fields)
    return None


def previews_reconcile(previews: list[Preview], listing: EngineListing, *, now: datetime) -> int:
    """Make the stored previews agree with the listing of their engines; returns how many
    rows changed. Rows are written only where they disagree, each kind of change
    with one UPDATE guarded by the state and its timestamp as read."""
    groups: dict[tuple[str, str], list[Preview]] = defaultdict(list)
    changes: dict[tuple[str, str], _Change] = {}
    for preview in previews:
        change = _change(preview, listing.containers_of(preview), now)
        if change is not None:
            groups[preview.state, change.to].append(preview)
            changes[preview.state, change.to] = change
    changed = 0
    for (from_state, to), members in groups.items():
        if to not in ALLOWED_TRANSITIONS[from_state]:
            raise ValueError(f"a preview cannot go from {from_state} to {to}")
        fields = changes[from_state, to].fields
        for start in range(0, len(members), _CHUNK):
            chunk = members[start : start + _CHUNK]
            as_read = [(preview.pk, preview.state_changed_at) for preview in chunk]
            count = (
                Preview.objects.filter(state=from_state)
                .filter(TupleIn(Tuple(F("pk"), F("state_changed_at")), as_read))
                .update(state=to, state_changed_at=now, **fields)
            )
            if count:
                stop_inputs_changed(preview.session_id for preview in chunk)
            if count == len(chunk):
                for preview in chunk:
                    preview.state, preview.state_changed_at = to, now
                    for name, value in fields.items():
                        setattr(preview, name, value)
            else:  # someone changed some of these rows meanwhile: theirs is newer
                _refresh(chunk)
            changed += count
    return changed


def _refresh(previews: list[Preview]) -> None:
    by_pk = {preview.pk: preview for preview in previews}
    names = [field.attname for field in Preview._meta.concrete_fields]
    for row in Preview.objects.filter(pk__in=list(by_pk)).values(*names):
        for name, value in row.items():
            setattr(by_pk[row["id"]], name, value)


def preview_reconcile(
    preview: Preview, containers: list[Container], *, now: datetime | None = None
) -> Preview:
    """Make one stored preview agree with its containers as its engine listed them."""
    listing = EngineListing(containers={(preview.engine, preview.session_id): containers})
    previews_reconcile([preview], listing, now=now or timezone.now())
    return preview
