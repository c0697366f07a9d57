"""The Celery app's start-up choices, from the options Celery's own command line parses."""

from __future__ import annotations

import pytest
from celery.bin.base import CLIContext
from celery.bin.worker import worker as worker_command

from kosuke.celery import app, runs_on_threads
from tests.procfile import procfile_command


def _procfile_worker_options(name: str) -> dict:
    """What `celery -A kosuke worker ...` of the Procfile's process `name` passes on."""
    arguments = procfile_command(name, STOPS_CONCURRENCY="8").split()[4:]
    context = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    return worker_command.make_context("worker", arguments, obj=context).params


@pytest.mark.parametrize(("process", "threads"), [("stops", True), ("worker", False)])
def test_only_the_stops_worker_runs_on_threads_and_keeps_the_database_pool(process, threads):
    # celeryd_init hands these options to kosuke.celery, which turns the pool off unless
    # the worker runs on threads.
    assert runs_on_threads(_procfile_worker_options(process), app.conf) is threads
