"""Cleanup runs and their stop decisions in the admin: read-only history."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from cleanup.control import Pause
from cleanup.models import CleanupRun, OperatorAction, StopDecision
from cleanup.stats import cleanup_stats, counts_in_words, stats_brief


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by the sweep only."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # history goes by its retention (cleanup.history), not by hand


class RunOutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("failed", "with failures"), ("clean", "no failures"), ("open", "still stopping")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "failed":
            return queryset.with_failures()
        if self.value() == "clean":
            return queryset.finished().without_failures()
        if self.value() == "open":
            return queryset.unfinished()
        return queryset


class RunFoundFilter(admin.SimpleListFilter):
    """Most beat sweeps find nothing; this hides them (the dashboard's runs page does the same)."""

    title = "found"
    parameter_name = "found"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("something", "something to stop"), ("nothing", "nothing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "something":
            return queryset.found_something()
        if self.value() == "nothing":
            return queryset.found_nothing()
        return queryset


DECISION_FIELDS = ("project_id", "session_id", "stop_reason", "reason", "level", "outcome")


class StopDecisionInline(admin.TabularInline):
    model = StopDecision
    fields = (*DECISION_FIELDS, "outcome_detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class OperatorActionInline(admin.TabularInline):
    model = OperatorAction
    fields = ("at", "kind", "actor_name", "reason", "details_in_words")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(CleanupRun)
class CleanupRunAdmin(ReadOnlyAdmin):
    # What tells runs apart at a glance, narrow enough beside the admin's sidebars; every
    # number is on each run's page (and on /ops/runs/).
    list_display = ("pk", "started", "trigger", "dry_run", "examined", "result", "short_note")
    list_filter = ("trigger", RunFoundFilter, RunOutcomeFilter, "dry_run", "paused", "started_at")
    date_hierarchy = "started_at"
    inlines = [OperatorActionInline, StopDecisionInline]

    @admin.display(description="started (UTC)", ordering="started_at")
    def started(self, run: CleanupRun) -> str:
        return f"{run.started_at:%Y-%m-%d %H:%M:%S}"  # a sweep every few seconds: to the second

    @admin.display(description="stops")
    def result(self, run: CleanupRun) -> str:
        counts = {"found": run.found, **run.counts, "deferred": run.deferred}
        return counts_in_words(counts) if run.found else "nothing to stop"

    @admin.display(description="note")
    def short_note(self, run: CleanupRun) -> str:
        return run.note if len(run.note) <= 60 else run.note[:59] + "…"

    def get_queryset(self, request: HttpRequest) -> QuerySet[CleanupRun]:
        # The numbers come from the decisions: counted for the whole page in one query.
        return super().get_queryset(request).with_counts()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        stats = cleanup_stats(timedelta(hours=24))
        if stats["paused"]:
            pause = Pause(**stats["paused"]).describe()
            self.message_user(
                request,
                f"Scheduled cleanup is {pause}; beat and cron sweeps stop nothing.",
                messages.WARNING,
            )
        self.message_user(request, stats_brief(stats), messages.INFO)
        return super().changelist_view(request, extra_context)


@admin.register(OperatorAction)
class OperatorActionAdmin(ReadOnlyAdmin):
    """Who paused, resumed, triggered, cancelled, retried or deleted, when and why."""

    list_display = ("at", "kind", "actor_name", "run_number", "reason", "until", "details_in_words")
    list_filter = ("kind", "at")
    search_fields = ("actor_name", "reason")
    date_hierarchy = "at"


@admin.register(StopDecision)
class StopDecisionAdmin(ReadOnlyAdmin):
    list_display = ("decided_at", *DECISION_FIELDS, "run")
    list_filter = ("outcome", "stop_reason", "level", "run__trigger", "decided_at")
    search_fields = ("project_id", "session_id", "reason", "outcome_detail")
    date_hierarchy = "decided_at"
    list_select_related = ("run",)
