"""The Celery app's start-up choices, from the options Celery's own command line parses."""

from __future__ import annotations

import pytest
from celery.bin.base import CLIContext
from celery.bin.worker import worker as worker_command

from kosuke.celery import app, engines_served, runs_on_threads
from tests.procfile import procfile_command


def _procfile_worker_options(name: str) -> dict:
    """What `celery -A kosuke worker ...` of the Procfile's process `name` passes on."""
    arguments = procfile_command(name, KOSUKE_ENGINE="local", ENGINE_CONCURRENCY="8").split()[4:]
    context = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    return worker_command.make_context("worker", arguments, obj=context).params


@pytest.mark.parametrize(("process", "threads"), [("engine", True), ("worker", False)])
def test_only_the_engines_worker_runs_on_threads_and_keeps_the_database_pool(process, threads):
    # celeryd_init hands these options to kosuke.celery, which turns the pool off unless
    # the worker runs on threads.
    assert runs_on_threads(_procfile_worker_options(process), app.conf) is threads


def test_the_procfile_workers_consume_the_sweeps_and_their_engines_queue():
    engine = _procfile_worker_options("engine")
    assert engine["queues"] == ["engine.local"]
    assert engine["concurrency"] == 8
    assert engine["hostname"].startswith("engine-local@")
    assert engines_served(engine["queues"]) == ["local"]
    worker = _procfile_worker_options("worker")
    assert worker["queues"] == ["sweeps"]
    assert engines_served(worker["queues"]) == []


def test_a_task_called_with_an_engine_goes_to_that_engine_s_queue():
    from kosuke.celery import route_to_engine

    stop = {"decision_id": 1, "engine": "b"}
    assert route_to_engine("cleanup.stop_preview", (), stop, {}) == {"queue": "engine.b"}
    assert route_to_engine("cleanup.sweep", (), {"trigger": "beat"}, {}) is None  # default
    assert app.amqp.router.route({}, "cleanup.stop_preview", kwargs=stop)["queue"].name == (
        "engine.b"
    )
    assert app.amqp.router.route({}, "cleanup.sweep", kwargs={})["queue"].name == "sweeps"
