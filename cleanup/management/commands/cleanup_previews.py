"""One-off cleanup: decide for every running preview now and stop the idle ones."""

from __future__ import annotations

import getpass
import json
import sys
import threading
from argparse import ArgumentTypeError
from datetime import timedelta
from typing import Any, NoReturn

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from chat.models import ChatSession
from chat.selectors import session_find
from cleanup.control import Actor, action_record
from cleanup.models import CleanupRun, OperatorAction, StopDecision
from cleanup.stats import cleanup_stats, stats_in_words, window_parse
from cleanup.stops import stop_inline
from cleanup.sweep import sweep
from cleanup.tasks import sweep_task
from kosuke.errors import ApplicationError
from previews.reach import EnginesDirect

COMMAND_ACTOR = Actor(name=f"{getpass.getuser()} (manage.py)")


def window_argument(text: str) -> timedelta:
    try:
        return window_parse(text)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ArgumentTypeError(f"{value} must be 1 or more")
    return value


class Command(BaseCommand):
    help = (
        "Run one cleanup sweep now: decide for every running preview (or one session's) "
        "and stop those that went idle. Prints the summary; exits 1 if anything failed "
        "(a stop, an engine, a session)."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def one_line_error(message: str) -> NoReturn:
            sys.stderr.write(f"cleanup_previews: {message} (see --help)\n")
            sys.exit(2)

        parser.error = one_line_error
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="decide and record the decisions, but stop nothing",
        )
        parser.add_argument(
            "--threshold-minutes",
            type=positive_int,
            metavar="N",
            help="stop previews inactive for N minutes or more "
            f"(default CLEANUP_THRESHOLD_MINUTES={settings.CLEANUP_THRESHOLD_MINUTES}; "
            "a session's own idle timeout still wins)",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            metavar="N",
            help="stop at most N previews, longest idle first; the rest wait for the next sweep "
            f"(default CLEANUP_BATCH_SIZE={settings.CLEANUP_BATCH_SIZE})",
        )
        parser.add_argument(
            "--session",
            metavar="PROJECT/SESSION",
            help="only this session's preview (add --owner when several users have these ids); "
            "prints its decision and why, stop or keep (-v 2 does that for every preview)",
        )
        parser.add_argument("--owner", metavar="USERNAME", help="the owner of --session")
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=4,
            metavar="N",
            help="stop up to N previews at a time in this process (default 4; a stop mostly "
            "waits on the Docker engine)",
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="hand the sweep to the Celery workers and return at once, instead of "
            "running it in this process",
        )
        parser.add_argument(
            "--stats",
            action="store_true",
            help="sweep nothing: print the cleanup statistics (previews now, stops, failure "
            "rate, time past the threshold, sweeps, pause) over --window",
        )
        parser.add_argument(
            "--window",
            type=window_argument,
            default="24h",
            metavar="WINDOW",
            help="with --stats: the window, in hours or days such as 24h or 7d (default 24h)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the summary (or --stats) as one JSON object"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stats"]:
            self._stats(options["window"], as_json=options["json"])
            return
        session = self._session(options["session"], options["owner"])
        if options["enqueue"]:
            self._enqueue(options, session)
            return
        run = sweep(
            trigger=CleanupRun.Trigger.COMMAND,
            dispatch=self._progress(stop_inline, quiet=options["json"]),
            threshold_minutes=options["threshold_minutes"],
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            session_pks={session.pk} if session else None,
            concurrency=options["concurrency"],
            # Run wherever an operator is: an engine it cannot reach from here is not down.
            reach=EnginesDirect(records_health=False),
        )
        if run is None:
            raise CommandError("another sweep is running right now; try again in a moment")
        action_record(OperatorAction.Kind.TRIGGER, COMMAND_ACTOR, run=run, dry_run=run.dry_run)
        show_kept = session is not None or options["verbosity"] >= 2
        self._report(run, as_json=options["json"], show_kept=show_kept)
        if run.has_failures:
            sys.exit(1)

    def _session(self, spec: str | None, owner: str | None) -> ChatSession | None:
        if spec is None:
            if owner:
                raise CommandError("--owner only makes sense with --session", returncode=2)
            return None
        try:
            return session_find(spec, owner=owner)
        except ApplicationError as exc:
            raise CommandError(f"--session: {exc.message}", returncode=2) from None

    def _enqueue(self, options: dict[str, Any], session: ChatSession | None) -> None:
        if not settings.WORKER_ENABLED:
            raise CommandError(
                "workers are disabled (WORKER_ENABLED=false); run without --enqueue", returncode=2
            )
        result = sweep_task.delay(
            trigger=CleanupRun.Trigger.COMMAND,
            threshold_minutes=options["threshold_minutes"],
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            session_pks=[session.pk] if session else None,
        )
        if options["json"]:
            self.stdout.write(json.dumps({"enqueued": result.id}))
        else:
            self.stdout.write(f"sweep handed to the workers as task {result.id} (see Flower)")

    def _progress(self, dispatch, *, quiet: bool):
        """Show each stop as it happens when a person watches the terminal."""
        if quiet or not sys.stderr.isatty():
            return dispatch
        done, lock = 0, threading.Lock()  # stops run in several threads

        def dispatch_with_progress(decision: StopDecision, *, take_over: bool = False) -> None:
            nonlocal done
            with lock:
                line = f"stopping {decision.project_id}/{decision.session_id} ..."
                sys.stderr.write(f"\r{line}\033[K")
                sys.stderr.flush()
            dispatch(decision, take_over=take_over)
            with lock:
                done += 1
                sys.stderr.write(f"\r{done} stop(s) done\033[K")
                sys.stderr.flush()

        return dispatch_with_progress

    def _report(self, run: CleanupRun, *, as_json: bool, show_kept: bool) -> None:
        summary = run.summary()
        kept = [
            {"session": session, "level": decision.level, "reason": decision.reason}
            for session, decision in (run.kept if show_kept else ())
        ]
        if as_json:
            self.stdout.write(json.dumps(summary | ({"kept": kept} if show_kept else {})))
            return
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        mode = " (dry run)" if run.dry_run else ""
        if run.note:
            self.stdout.write(f"note: {run.note}")
        notes = [
            f"{count} {what}"
            for count, what in (
                (run.deferred, "deferred to the next sweep"),
                (run.undecided, "could not be decided"),
                (run.pending, "still pending"),
            )
            if count
        ]
        self.stdout.write(
            f"run {run.pk}{mode}: examined {run.examined}, found {run.found}, "
            f"stopped {run.stopped}, skipped {run.skipped}, failed {run.failed} "
            f"in {run.duration_ms} ms" + (f" ({', '.join(notes)})" if notes else "")
        )
        for decision in run.decisions.order_by("pk"):
            self.stdout.write(
                f"  {decision.outcome:9} {decision.project_id}/{decision.session_id}: "
                f"{decision.reason}"
                + (f" ({decision.outcome_detail})" if decision.outcome_detail else "")
            )
        for preview in kept:
            self.stdout.write(f"  {'keep':9} {preview['session']}: {preview['reason']}")
        for error in run.errors:
            self.stderr.write(f"  error: {error}")

    def _stats(self, window: timedelta, *, as_json: bool) -> None:
        stats = cleanup_stats(window)
        if as_json:
            self.stdout.write(json.dumps(stats, cls=DjangoJSONEncoder))
            return
        self.stdout.write("\n".join(stats_in_words(stats)))
