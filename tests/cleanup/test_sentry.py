"""Sentry: the real SDK, recording envelopes in process instead of sending them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta as td

import pytest
import sentry_sdk
from celery.app import trace as celery_trace
from celery.worker.consumer import consumer as celery_consumer
from sentry_sdk.transport import Transport

from cleanup.models import StopDecision
from cleanup.tasks import sweep_task
from kosuke.sentry import sentry_init
from previews.models import Preview
from tests.builders import session_with_running_preview
from tests.polling import finished_run


class RecordingTransport(Transport):
    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    def events(self) -> list[dict]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == "event"
        ]


@pytest.fixture
def sentry_events(monkeypatch):
    transport = RecordingTransport()
    sentry_init(
        dsn="https://public@sentry.example.invalid/1",
        environment="tests",
        traces_sample_rate=0.0,
        transport=transport,
    )
    # A worker process loads the settings (and so Sentry) before it imports its consumer;
    # this test process imported the consumer long before, so hand it the patched tracer.
    monkeypatch.setattr(celery_consumer, "build_tracer", celery_trace.build_tracer)
    yield transport
    sentry_sdk.init()  # no DSN: the SDK goes quiet again


def test_a_stop_that_keeps_failing_is_reported_once_with_task_and_queue(
    sentry_events, worker, alice, engine_proxy
):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=1))
    Preview.objects.filter(session=session).update(engine="proxy")
    engine_proxy.fail(b"/stop", times=1000)

    sweep_task.delay().get(timeout=30)
    finished_run()
    sentry_sdk.flush()

    [event] = sentry_events.events()
    decision = StopDecision.objects.get()
    assert decision.outcome == "failed"
    tags = event["tags"]
    assert tags["queue"] == "engine.proxy"
    assert tags["task_id"]
    assert tags["retries"] == "3"
    assert tags["session"] == "proj-1/s"
    assert tags["component"] == "web"  # this process; a real worker tags itself "worker"
    assert event["exception"]["values"][-1]["type"] == "EngineError"


@pytest.mark.parametrize(
    ("dsn", "active"), [("", "False"), ("https://k@sentry.example.invalid/1", "True")]
)
def test_settings_start_sentry_only_with_a_dsn(dsn, active):
    probe = (
        "import django; django.setup(); import sentry_sdk;"
        "print(sentry_sdk.get_client().is_active())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "SENTRY_DSN": dsn, "DJANGO_SETTINGS_MODULE": "kosuke.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout.strip() == active, result.stderr
