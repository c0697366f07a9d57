"""The operations dashboard at `/ops/` (staff only): server-rendered pages over the same
statistics and controls as the operator API, kept live by the event feed (cleanup.live).

Each control is a POST with CSRF that asks why, calls one function of cleanup.control
(or previews.remote) and redirects to what it changed; a refusal is a 4xx page that
says why and changes nothing.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from chat.selectors import session_find
from cleanup import control
from cleanup.forms import PauseForm, PreviewForm, ReasonForm, SweepForm
from cleanup.live import PATH as EVENTS_PATH
from cleanup.models import CleanupRun, StopDecision
from cleanup.progress import events_latest_id
from cleanup.stats import (
    cleanup_stats,
    counts_in_words,
    rate_in_words,
    stats_series,
    stats_window,
)
from cleanup.tasks import run_start
from kosuke.errors import ApplicationError
from previews.remote import preview_ask
from previews.services import PreviewAction

RUNS_PER_PAGE = 50
# The overview lists this many of the watched run's decisions (its page lists them all).
DECISIONS_SHOWN = 200
DAY, WEEK = timedelta(days=1), timedelta(days=7)


def staff_only(view):
    """Anonymous: the admin's login, then back; logged in but not staff: 403."""

    @functools.wraps(view)
    def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not (request.user.is_active and request.user.is_staff):
            return _refused(request, 403, "Operators only: this page needs a staff user.")
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as exc:
            return _refused(request, exc.status, exc.message)

    return checked


def _refused(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return render(request, "ops/refused.html", {"message": message}, status=status)


def _invalid(request: HttpRequest, form) -> HttpResponse:
    errors = []
    for name, messages_of_field in form.errors.items():
        prefix = "" if name == "__all__" else f"{name}: "
        errors += [f"{prefix}{message}" for message in messages_of_field]
    return _refused(request, 400, "; ".join(errors))


def _actor(request: HttpRequest) -> control.Actor:
    return control.Actor.of(request.user)


def _page(request: HttpRequest, template: str, since: str, **context: object) -> HttpResponse:
    """A page that follows the live feed from `since`: read before the database, so that
    nothing changes between what the page shows and what the feed sends next."""
    return render(request, template, {"events_path": EVENTS_PATH, "events_since": since, **context})


@require_GET
@staff_only
def overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    since = events_latest_id()
    day, week = cleanup_stats(DAY, now=now), stats_window(WEEK, now=now)
    # The run of the latest decision: the latest run that found something (an index scan).
    latest = StopDecision.objects.order_by("-decided_at").values("run_id")[:1]
    watched = CleanupRun.objects.with_counts().filter(pk__in=latest).first()
    return _page(
        request,
        "ops/overview.html",
        since,
        stats=day,
        week=week,
        stops_by_reason=[
            (
                reason,
                counts_in_words(day["stops"]["by_reason"].get(reason, {})),
                counts_in_words(outcomes),
            )
            for reason, outcomes in week["stops"]["by_reason"].items()
        ],
        failure_rates=(
            rate_in_words(day["stops"]["failure_rate"]),
            rate_in_words(week["stops"]["failure_rate"]),
        ),
        interval_seconds=settings.CLEANUP_INTERVAL_SECONDS,
        series={"day": stats_series(DAY, now=now), "week": stats_series(WEEK, now=now)},
        run=watched,
        decisions=watched.decisions.order_by("pk")[:DECISIONS_SHOWN] if watched else [],
    )


@require_GET
@staff_only
def run_list(request: HttpRequest) -> HttpResponse:
    since = events_latest_id()
    runs = CleanupRun.objects.with_counts().order_by("-started_at", "-pk")
    show_empty = request.GET.get("empty") == "1"
    if not show_empty:
        runs = runs.found_something()
    trigger = request.GET.get("trigger", "")
    if trigger in CleanupRun.Trigger.values:
        runs = runs.filter(trigger=trigger)
    outcome = request.GET.get("outcome", "")
    if outcome in StopDecision.Outcome.values:
        runs = runs.filter(Exists(StopDecision.objects.filter(run=OuterRef("pk"), outcome=outcome)))
    dry_run = request.GET.get("dry_run", "")
    if dry_run in ("yes", "no"):
        runs = runs.filter(dry_run=dry_run == "yes")
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return _page(
        request,
        "ops/runs.html",
        since,
        page=page,
        show_empty=show_empty,
        filters={"trigger": trigger, "outcome": outcome, "dry_run": dry_run},
        triggers=CleanupRun.Trigger.values,
        outcomes=StopDecision.Outcome.values,
        query_without_page=_query_without(request, "page"),
    )


def _query_without(request: HttpRequest, name: str) -> str:
    query = request.GET.copy()
    query.pop(name, None)
    return query.urlencode()


@require_GET
@staff_only
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    since = events_latest_id()
    run = get_object_or_404(CleanupRun.objects.with_counts().select_related("retry_of"), pk=run_id)
    return _page(
        request,
        "ops/run.html",
        since,
        run=run,
        decisions=run.decisions.order_by("pk"),
        actions=run.actions.order_by("at", "pk"),
        retries=run.retries.order_by("pk").values_list("pk", flat=True),
    )


# --- controls -----------------------------------------------------------------------


def control_posted(form_class: type[Form]):
    """A control: POST only, staff only, its form valid (else a 400 page saying what is
    wrong); the view gets the form's cleaned data."""

    def wrap(view):
        @require_POST
        @staff_only
        @functools.wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            form = form_class(request.POST)
            if not form.is_valid():
                return _invalid(request, form)
            return view(request, form.cleaned_data, *args, **kwargs)

        return checked

    return wrap


@control_posted(SweepForm)
def sweep_start(request: HttpRequest, data: dict) -> HttpResponse:
    run = CleanupRun.new(
        trigger=CleanupRun.Trigger.API,
        threshold_minutes=data["threshold_minutes"],
        batch_size=data["batch_size"],
        dry_run=data["dry_run"],
    )
    control.run_request(run, _actor(request), reason=data["reason"], start=run_start)
    messages.success(request, f"Run {run.pk} started" + (" (dry run)" if run.dry_run else "") + ".")
    return redirect("ops:run", run_id=run.pk)


@control_posted(PauseForm)
def pause(request: HttpRequest, data: dict) -> HttpResponse:
    until = timezone.now() + timedelta(minutes=data["minutes"]) if data["minutes"] else None
    paused = control.cleanup_pause(_actor(request), reason=data["reason"], until=until)
    messages.success(request, f"Scheduled cleanup is {paused.describe()}.")
    return redirect("ops:overview")


@control_posted(ReasonForm)
def resume(request: HttpRequest, data: dict) -> HttpResponse:
    ended = control.cleanup_resume(_actor(request), reason=data["reason"])
    messages.success(request, "Cleanup resumed." if ended else "Cleanup was not paused.")
    return redirect("ops:overview")


@control_posted(ReasonForm)
def run_cancel(request: HttpRequest, data: dict, run_id: int) -> HttpResponse:
    run = get_object_or_404(CleanupRun.objects.with_counts(), pk=run_id)
    result = control.run_cancel(run, _actor(request), reason=data["reason"])
    messages.success(
        request,
        f"Run {run.pk}: {result['cancelled']} stop(s) cancelled, "
        f"{result['under_way']} already under way finish.",
    )
    return redirect("ops:run", run_id=run.pk)


@control_posted(ReasonForm)
def run_retry(request: HttpRequest, data: dict, run_id: int) -> HttpResponse:
    run = get_object_or_404(CleanupRun.objects.with_counts(), pk=run_id)
    retry = control.run_retry(run, _actor(request), reason=data["reason"], start=run_start)
    messages.success(request, f"Run {retry.pk} decides again for run {run.pk}'s failed stops.")
    return redirect("ops:run", run_id=retry.pk)


@control_posted(PreviewForm)
def preview_control(request: HttpRequest, data: dict) -> HttpResponse:
    session = session_find(data["session"], owner=data["owner"] or None)
    actor = f"{request.user} on the dashboard ({data['reason']})"
    preview = preview_ask(session=session, action=PreviewAction(data["action"]), actor=actor)
    messages.success(request, f"Preview of {session}: {preview['state']}.")
    return redirect("ops:overview")
