"""The operator API (`/api/ops/`, staff only) and the cron endpoint (`/api/cron/cleanup`,
a bearer secret): parse, call one function of cleanup.control or cleanup.stats, answer."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404, HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import paginate

from chat.selectors import session_find
from cleanup import control
from cleanup.models import CleanupRun, StopDecision
from cleanup.schemas import (
    CancelOut,
    CronOut,
    PauseIn,
    PauseOut,
    ReasonIn,
    RunDetailOut,
    RunFilters,
    RunOut,
    RunRequestIn,
)
from cleanup.stats import cleanup_stats, window_parse
from cleanup.tasks import run_start
from kosuke.bearer import bearer_matches
from kosuke.errors import ApplicationError
from kosuke.pagination import Pagination

ops = Router(tags=["operators"])
cron = Router(tags=["cron"], auth=None)

RUN = "/cleanup-runs/{run_id}"


def _staff(request: HttpRequest, *query: str) -> control.Actor:
    """Who asks, if staff; and a refusal of query parameters the route does not know
    (ninja passes over them: a misspelt filter would silently list everything)."""
    if not request.auth.is_staff:
        raise ApplicationError("operators only: this needs a staff user", status=403)
    unknown = sorted(set(request.GET) - set(query))
    if unknown:
        raise ApplicationError(f"unknown query parameter(s): {', '.join(unknown)}", status=422)
    return control.Actor.of(request.auth)


def _run(request: HttpRequest, run_id: int) -> tuple[CleanupRun, control.Actor]:
    """The run and who asks, staff checked first (no one else learns which runs exist)."""
    actor = _staff(request)
    return _run_read(run_id), actor


def _run_read(run_id: int) -> CleanupRun:
    run = CleanupRun.objects.with_counts().filter(pk=run_id).first()
    if run is None:
        raise ApplicationError(f"no cleanup run {run_id}", status=404)
    return run


def _pause_out(pause: control.Pause | None) -> dict:
    return {"paused": True, **pause.as_dict()} if pause else {"paused": False}


@ops.post("/cleanup-runs", response={200: RunDetailOut, 202: RunDetailOut})
def run_create(request: HttpRequest, body: RunRequestIn):
    """Start a sweep now (on the workers). With `wait`, answer 200 once it has finished,
    or 202 as it stands when `timeout_seconds` pass first."""
    actor = _staff(request)
    session = session_find(body.session, owner=body.owner) if body.session else None
    if body.owner and not session:
        raise ApplicationError("'owner' only makes sense with 'session'")
    run = CleanupRun.new(
        trigger=CleanupRun.Trigger.API,
        threshold_minutes=body.threshold_minutes,
        batch_size=body.batch_size,
        dry_run=body.dry_run,
    )
    session_pks = [session.pk] if session else None
    control.run_request(run, actor, session_pks=session_pks, reason=body.reason, start=run_start)
    run = control.run_wait(run, body.timeout_seconds if body.wait else 0)
    return Status(200 if run.is_finished and body.wait else 202, run)


@ops.get("/cleanup-runs", response=list[RunOut])
@paginate(Pagination)
def run_list(request: HttpRequest, filters: Query[RunFilters]) -> QuerySet[CleanupRun]:
    """Newest first."""
    _staff(request, *RunFilters.model_fields, *Pagination.Input.model_fields)
    runs = CleanupRun.objects.with_counts().order_by("-started_at", "-pk")
    if filters.trigger:
        runs = runs.filter(trigger=filters.trigger)
    if filters.dry_run is not None:
        runs = runs.filter(dry_run=filters.dry_run)
    if filters.outcome:  # EXISTS: a join would multiply the counts
        decisions = StopDecision.objects.filter(run=OuterRef("pk"), outcome=filters.outcome)
        runs = runs.filter(Exists(decisions))
    if filters.found_something is not None:
        runs = runs.found_something() if filters.found_something else runs.found_nothing()
    if filters.started_after:
        runs = runs.filter(started_at__gte=filters.started_after)
    if filters.started_before:
        runs = runs.filter(started_at__lt=filters.started_before)
    return runs


@ops.get(RUN, response=RunDetailOut)
def run_get(request: HttpRequest, run_id: int):
    """The run with every decision (its reason and outcome) and what operators did to it."""
    return _run(request, run_id)[0]


@ops.delete(RUN, response={204: None})
def run_delete(request: HttpRequest, run_id: int):
    """Delete a finished run and its decisions (409 while it is not finished)."""
    control.run_delete(*_run(request, run_id))
    return Status(204, None)


@ops.post(f"{RUN}/cancel", response=CancelOut)
def run_cancel(request: HttpRequest, run_id: int, body: ReasonIn):
    """Cancel the run's stops that have not begun; those talking to the engine finish."""
    run, actor = _run(request, run_id)
    result = control.run_cancel(run, actor, reason=body.reason)
    return {"run": run.pk, **result}


@ops.post(f"{RUN}/retry", response={202: RunDetailOut})
def run_retry(request: HttpRequest, run_id: int, body: ReasonIn):
    """Decide again now for the sessions whose stop failed, as a new run linked to this."""
    run, actor = _run(request, run_id)
    retry = control.run_retry(run, actor, reason=body.reason, start=run_start)
    return Status(202, _run_read(retry.pk))


@ops.get("/cleanup/pause", response=PauseOut)
def pause_get(request: HttpRequest):
    _staff(request)
    return _pause_out(control.pause_state())


@ops.post("/cleanup/pause", response=PauseOut)
def pause(request: HttpRequest, body: PauseIn):
    """Pause scheduled sweeps (beat, cron) until resumed, or until `until`."""
    actor = _staff(request)
    return _pause_out(control.cleanup_pause(actor, reason=body.reason, until=body.until))


@ops.post("/cleanup/resume", response=PauseOut)
def resume(request: HttpRequest, body: ReasonIn):
    control.cleanup_resume(_staff(request), reason=body.reason)
    return _pause_out(None)


@ops.get("/stats")
def stats(request: HttpRequest, window: str = "24h") -> dict:
    """Previews now, and what cleanup did in the window (`24h`, `7d`: 1h to 30d)."""
    _staff(request, "window")
    try:
        span = window_parse(window)
    except ValueError as exc:
        raise ApplicationError(str(exc), status=422) from None
    return cleanup_stats(span)


def _cron_secret_checked(request: HttpRequest) -> None:
    """`Authorization: Bearer <CRON_SECRET>`, compared in constant time; 404 while unset."""
    if not settings.CRON_SECRET:
        raise Http404
    if not bearer_matches(request, settings.CRON_SECRET):
        raise ApplicationError("a wrong or missing cron secret", status=401)


@cron.api_operation(["GET", "POST"], "/cleanup", response={200: CronOut, 202: CronOut})
def cron_cleanup(request: HttpRequest):
    """Start a sweep as beat would (trigger `cron`; nothing is stopped while paused)."""
    _cron_secret_checked(request)
    run = CleanupRun.new(trigger=CleanupRun.Trigger.CRON)
    control.run_request(run, control.Actor(name="cron"), start=run_start)
    run.refresh_from_db()
    if run.swept_at:
        return Status(200, run)
    pause = control.pause_state()  # queued: it will find cleanup as it is now
    return Status(
        202, {"pk": run.pk, "paused": bool(pause), "note": pause.describe() if pause else ""}
    )
