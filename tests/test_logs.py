"""The one log format: logfmt lines with component, task and session."""

from __future__ import annotations

import logging

from kosuke import logs


def _line(message: str, **extra) -> str:
    record = logging.LogRecord("cleanup.stops", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return logs.KeyValueFormatter().format(record)


def test_a_line_carries_component_task_queue_and_session():
    logs.bind_component("worker")
    logs.bind_task(task_id="3f2c", queue="stops", session="proj-1/sess-1")
    try:
        line = _line('stop proj-1/sess-1: "stopped"')
    finally:
        logs.unbind_task()
        logs.bind_component("web")

    assert " level=INFO component=worker logger=cleanup.stops task_id=3f2c queue=stops " in line
    assert line.endswith('session=proj-1/sess-1 msg="stop proj-1/sess-1: \\"stopped\\""')


def test_a_record_names_its_own_session_outside_tasks():
    line = _line("decision", session="p/s", run=7)

    assert "component=web" in line and "task_id" not in line
    assert "session=p/s run=7 msg=decision" in line


def test_django_errors_are_logged_once_in_the_one_format():
    import logging as stdlib_logging

    # Django's console handler (on with DEBUG) is gone: its records reach the root's.
    django_logger = stdlib_logging.getLogger("django")
    assert django_logger.handlers == [] and django_logger.propagate


def test_browsers_asking_for_a_favicon_get_no_404(client, caplog):
    with caplog.at_level("WARNING", logger="django.request"):
        response = client.get("/favicon.ico")

    assert response.status_code == 204
    assert caplog.records == []
