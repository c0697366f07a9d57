"""python manage.py cleanup_previews: summary, JSON, exit status, clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
from datetime import timedelta as td
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cleanup.models import CleanupRun
from kosuke.redis_client import redis_client
from previews.engine import engine
from previews.models import Preview
from tests.builders import database_url_for_processes, session_with_running_preview
from tests.engine_proxy import EngineProxy
from tests.engines import engines_configure

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _cleanup(*args: str) -> str:
    out = StringIO()
    call_command("cleanup_previews", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_stops_idle_previews_and_prints_the_summary(previews_on_docker, alice):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(minutes=50))
    session_with_running_preview(alice, session_id="fresh", idle_for=td(minutes=1))

    out = _cleanup()

    run = CleanupRun.objects.get()
    assert run.trigger == "command"
    assert out.splitlines()[0].startswith(
        f"run {run.pk}: examined 2, found 1, stopped 1, skipped 0, failed 0 in "
    )
    assert "stopped   proj-1/idle: stopped after 50 min without activity" in out
    assert Preview.objects.get(session=idle).state == "stopped"


def test_json_prints_one_object(previews_on_docker, alice):
    session_with_running_preview(alice, session_id="idle", idle_for=td(minutes=50))

    summary = json.loads(_cleanup("--json", "--dry-run", "--threshold-minutes", "45"))

    assert summary["dry_run"] is True and summary["threshold_minutes"] == 45
    assert (summary["found"], summary["stopped"], summary["skipped"]) == (1, 0, 1)


def test_it_exits_1_when_a_stop_fails(previews_on_docker, alice, tmp_path, settings):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=1))
    proxy = EngineProxy(tmp_path / "docker.sock", engine().url)
    engines_configure(settings, proxy=proxy.url)
    Preview.objects.filter(session=session).update(engine="proxy")
    proxy.fail(b"/stop", times=10)
    try:
        with pytest.raises(SystemExit) as exit_:
            _cleanup("--json")
    finally:
        proxy.close()

    assert exit_.value.code == 1
    assert CleanupRun.objects.get().failed == 1


def test_one_session_only(previews_on_docker, alice):
    wanted = session_with_running_preview(alice, session_id="wanted", idle_for=td(hours=1))
    other = session_with_running_preview(alice, session_id="other", idle_for=td(hours=1))

    _cleanup("--session", "proj-1/wanted")

    assert Preview.objects.get(session=wanted).state == "stopped"
    assert Preview.objects.get(session=other).state == "running"


def test_an_unknown_session_is_a_clear_error(db):
    with pytest.raises(CommandError, match="--session: no chat session proj-1/nope"):
        _cleanup("--session", "proj-1/nope")

    assert not CleanupRun.objects.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--session", "proj-1/nope"], "--session: no chat session proj-1/nope"),
        (["--session", "no-slash"], "--session: session 'no-slash': expected PROJECT/SESSION"),
        (["--owner", "admin"], "--owner only makes sense with --session"),
    ],
)
def test_every_bad_argument_exits_2_with_one_line(db, args, words):
    # Exit 1 means a stop failed; a bad argument is 2, whether argparse or the database
    # finds it.
    result = subprocess.run(
        [sys.executable, "manage.py", "cleanup_previews", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_processes()},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr


def test_enqueue_hands_the_sweep_to_the_workers(db):
    out = _cleanup("--enqueue", "--json")

    assert json.loads(out)["enqueued"]
    assert redis_client().llen("sweeps") == 1
    assert not CleanupRun.objects.exists()


def test_enqueue_refuses_when_workers_are_disabled(db, settings):
    settings.WORKER_ENABLED = False

    with pytest.raises(CommandError, match="WORKER_ENABLED=false"):
        _cleanup("--enqueue")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--batch-size", "0"], "--batch-size: 0 must be 1 or more"),
        (["--threshold-minutes", "soon"], "--threshold-minutes: 'soon' is not a whole number"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--stats", "--window", "5m"], "--window: window '5m': expected hours or days"),
    ],
)
def test_bad_arguments_get_one_clear_line(args, words):
    result = subprocess.run(
        [sys.executable, "manage.py", "cleanup_previews", *args],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr


def test_help_explains_every_option():
    result = subprocess.run(
        [sys.executable, "manage.py", "cleanup_previews", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    for option in (
        "--dry-run",
        "--threshold-minutes",
        "--batch-size",
        "--session",
        "--enqueue",
        "--json",
        "--concurrency",
    ):
        assert option in result.stdout


@pytest.mark.django_db(transaction=True)
def test_on_a_terminal_it_shows_each_stop(previews_on_docker, alice, settings):
    idle = session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    leader, follower = pty.openpty()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_processes(),
        "DOCKER_HOST": engine().url,
        "PREVIEW_STOP_TIMEOUT_SECONDS": "2",
    }
    with subprocess.Popen(
        [sys.executable, "manage.py", "cleanup_previews"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
    ) as command:
        os.close(follower)
        out, _ = command.communicate(timeout=120)
    shown = b""
    with contextlib.suppress(OSError):  # the terminal is closed once the command exits
        while chunk := os.read(leader, 4096):
            shown += chunk
    os.close(leader)

    assert command.returncode == 0, out
    assert b"stopping proj-1/idle ..." in shown and b"1 stop(s) done" in shown
    assert Preview.objects.get(session=idle).state == "stopped"


@pytest.mark.django_db(transaction=True)
def test_it_stops_several_previews_at_a_time(previews_on_docker, alice):
    sessions = [
        session_with_running_preview(alice, session_id=f"s{n}", idle_for=td(hours=1))
        for n in range(3)
    ]

    summary = json.loads(_cleanup("--json", "--concurrency", "3"))

    assert (summary["found"], summary["stopped"], summary["failed"]) == (3, 3, 0)
    assert [Preview.objects.get(session=s).state for s in sessions] == ["stopped"] * 3


def test_stats_are_printed_in_words_or_as_json(db):
    from cleanup.control import Actor, cleanup_pause

    cleanup_pause(Actor(name="ops"), reason="drill")

    words = _cleanup("--stats", "--window", "7d")
    stats = json.loads(_cleanup("--stats", "--json"))

    assert words.splitlines()[0] == "cleanup: paused by ops: drill"
    assert "last 168 h:" in words
    assert stats["window"]["hours"] == 24 and stats["paused"]["reason"] == "drill"


def test_a_dry_run_of_one_session_says_why_it_is_kept(previews_on_docker, alice):
    session_with_running_preview(alice, session_id="busy", idle_for=td(minutes=5))

    words = _cleanup("--session", "proj-1/busy", "--dry-run")
    as_json = json.loads(_cleanup("--session", "proj-1/busy", "--dry-run", "--json"))

    assert "  keep      proj-1/busy: idle: last activity 5 min ago" in words.splitlines()
    assert as_json["kept"] == [
        {"session": "proj-1/busy", "level": "idle", "reason": "idle: last activity 5 min ago"}
    ]
    everyone = _cleanup("--dry-run", "--verbosity", "2")
    assert "proj-1/busy: idle: last activity 5 min ago" in everyone
    assert "keep" not in _cleanup("--dry-run")  # without -v 2, only what was found
