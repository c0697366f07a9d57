"""Which engine a preview's work goes to: the one holding its containers, or, for a preview
that has none (new, or removed after the retention), the engine with the most free
capacity among those up.

Decided in the web process from what it can read without reaching an engine: the
previews not stopped per engine (PostgreSQL) and the workers' latest reports (Redis).
"""

from __future__ import annotations

from collections import Counter

from django.db.models import Count

from chat.models import ChatSession
from kosuke.errors import ApplicationError
from kosuke.health import engine_report_fresh, engine_reports, engine_up
from previews.engines import EngineConfig, engine_config, engines
from previews.models import Preview, PreviewState


def engines_free() -> dict[str, int]:
    """Free capacity of each engine: its capacity less the previews not stopped on it."""
    live = Counter(
        dict(
            Preview.objects.exclude(state=PreviewState.STOPPED)
            .values_list("engine")
            .annotate(Count("pk"))
            .order_by()
        )
    )
    return {name: config.capacity - live[name] for name, config in engines().items()}


def engine_place() -> EngineConfig:
    """The engine a new preview goes to: the most free capacity among the engines a fresh
    report says are up (among all, while no report is fresh: nothing is known then, and
    the request itself says if the engine's workers do not answer). ApplicationError 503
    when all are full or down, saying which."""
    configured = engines()
    reports = engine_reports()
    known = any(engine_report_fresh(reports.get(name, {})) for name in configured)
    up = [name for name in configured if engine_up(reports.get(name)) or not known]
    if not up:
        raise ApplicationError(
            f"no Docker engine is up to run the preview ({', '.join(configured)} down); "
            "try again in a minute",
            status=503,
        )
    free = engines_free()
    best = max(up, key=lambda name: free[name])
    if free[best] <= 0:
        capacity = sum(configured[name].capacity for name in up)
        raise ApplicationError(
            f"every Docker engine is full ({capacity} previews running on "
            f"{', '.join(up)}); try again once some have stopped",
            status=503,
        )
    return configured[best]


def preview_engine(session: ChatSession, *, placing: bool) -> str:
    """The engine the session's preview work goes to. With `placing` (an open), a preview
    without containers is given the engine `engine_place` picks, recorded at once; without
    it, "" when it has none."""
    preview = Preview.objects.filter(session=session).only("engine").first()
    held = preview.engine if preview else ""
    # An engine taken out of PREVIEW_ENGINES holds nothing this deployment can reach.
    known = held if engine_config(held) is not None else ""
    if known or not placing:
        return known
    placed = engine_place().name
    if preview is None:
        preview, created = Preview.objects.get_or_create(
            session=session, defaults={"engine": placed}
        )
        if created:
            return placed
    # Recorded unless another open placed it first: then that engine it is.
    Preview.objects.filter(pk=preview.pk, engine=held).update(engine=placed)
    return Preview.objects.values_list("engine", flat=True).get(pk=preview.pk)
