"""Migration 0002 turns the hand-kept run counters into numbers counted from decisions,
keeping what operators saw."""

from __future__ import annotations

import pytest

from tests.migrations import migrate_to, migrate_to_latest

BEFORE = [("cleanup", "0001_initial")]
AFTER = [("cleanup", "0002_counts_from_decisions")]


@pytest.mark.django_db(transaction=True)
def test_deferred_rows_become_a_count_and_undecided_previews_their_own_number():
    apps = migrate_to(BEFORE)
    Run = apps.get_model("cleanup", "CleanupRun")
    Decision = apps.get_model("cleanup", "StopDecision")
    run = Run.objects.create(
        trigger="beat",
        threshold_minutes=30,
        batch_size=1,
        found=3,
        stopped=1,
        skipped=1,
        failed=2,  # one failed stop, one preview on an unreachable engine
        errors=[
            {"engine": "unix:///gone.sock", "error": "unreachable"},
            {"session": "p/failing", "error": "could not stop"},
        ],
    )
    for session_id, outcome in [("ok", "stopped"), ("later", "deferred"), ("failing", "failed")]:
        Decision.objects.create(
            run=run,
            project_id="p",
            session_id=session_id,
            stop_reason="inactive",
            reason="idle",
            level="background",
            outcome=outcome,
            outcome_detail="could not stop" if outcome == "failed" else "",
        )

    migrate_to(AFTER)
    migrate_to_latest()  # to read the run through today's model

    from cleanup.models import CleanupRun

    migrated = CleanupRun.objects.get(pk=run.pk)
    assert (migrated.found, migrated.stopped, migrated.skipped, migrated.failed) == (3, 1, 1, 1)
    assert (migrated.deferred, migrated.undecided) == (1, 1)
    assert migrated.errors == [
        {"engine": "unix:///gone.sock", "error": "unreachable"},
        {"session": "p/failing", "error": "could not stop"},
    ]
    assert not migrated.decisions.filter(outcome="deferred").exists()
