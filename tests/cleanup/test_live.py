"""The dashboard's live feed (/ops/events) served by uvicorn: staff only, one Redis
subscription per stream released on disconnect, resumable by Last-Event-ID, capped."""

from __future__ import annotations

import json
import threading

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from cleanup import control
from cleanup.live import streams_open
from cleanup.models import CleanupRun, StopDecision
from cleanup.progress import CHANNEL, progress_publish
from cleanup.stops import decision_settle
from kosuke.redis_client import redis_client
from tests.builders import stop_decisions_create, user_create
from tests.polling import wait_for

Outcome = StopDecision.Outcome


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.fixture
def staff_cookie(transactional_db) -> str:
    return _cookie(user_create("operator", is_staff=True))


class Stream:
    """One client of the feed, reading it frame by frame."""

    def __init__(self, server, cookie: str = "", *, last_event_id: str = "", path="/ops/events"):
        self.connection = server.connect()
        headers = {"Cookie": cookie} if cookie else {}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()

    def frame(self) -> dict[str, str]:
        """The next frame's fields (comments under ":"), blank line excluded."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()
            if line in ("\n", ""):
                if fields or line == "":
                    return fields
                continue
            name, _, value = line.rstrip("\n").partition(":")
            fields[name] = value.lstrip(" ")

    def event(self) -> tuple[str, dict]:
        """The next event: (id, data), passing over comments and the retry hint."""
        while True:
            fields = self.frame()
            assert fields, "the stream ended"
            if "data" in fields:
                assert fields.get("event", "message") == "message", fields
                return fields["id"], json.loads(fields["data"])

    def close(self) -> None:
        self.connection.close()


def _subscribers() -> int:
    return dict(redis_client().pubsub_numsub(CHANNEL))[CHANNEL]


def _refusal(server, cookie: str = "", method: str = "GET", **headers) -> tuple[int, str]:
    conn = server.connect()
    conn.request(
        method, "/ops/events", headers={"Cookie": cookie, **headers} if cookie else headers
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body["error"]


def test_only_staff_get_the_feed_and_bad_requests_are_told_why(asgi_server, staff_cookie):
    member = _cookie(user_create("member"))

    assert _refusal(asgi_server) == (403, "operators only: log in as a staff user")
    assert _refusal(asgi_server, member)[0] == 403
    assert _refusal(asgi_server, staff_cookie, method="POST")[0] == 405
    status, error = _refusal(asgi_server, staff_cookie, **{"Last-Event-ID": "yesterday"})
    assert status == 400 and "expected an id this feed sent" in error
    status, error = _refusal(asgi_server, staff_cookie, Host="evil.example")
    assert status == 400 and "ALLOWED_HOSTS" in error
    assert _subscribers() == 0


def test_each_event_arrives_once_with_its_id_and_idle_streams_get_keep_alives(
    asgi_server, staff_cookie, settings
):
    settings.LIVE_KEEPALIVE_SECONDS = 0.3
    stream = Stream(asgi_server, staff_cookie)
    assert stream.response.status == 200
    assert stream.response.getheader("content-type") == "text/event-stream"
    wait_for(lambda: _subscribers() == 1, timeout=5, what="the stream to subscribe")

    assert stream.frame() == {"retry": "3000"}
    assert stream.frame() == {"": "keep-alive"}  # a comment line
    control.cleanup_pause(control.Actor("alice"), reason="deploy")

    event_id, event = stream.event()
    assert event["phase"] == "paused" and event["pause"]["by"] == "alice"
    [[kept_id, _]] = redis_client().xrange("cleanup:events")
    assert event_id == kept_id
    stream.close()


def test_a_client_that_goes_releases_its_subscription_and_holds_no_thread_or_connection(
    asgi_server, staff_cookie
):
    pool = connection.pool
    connection.ensure_connection()
    checked_out_before = pool.get_stats()["pool_size"] - pool.get_stats()["pool_available"]
    threads_before = threading.active_count()

    streams = [Stream(asgi_server, staff_cookie) for _ in range(8)]
    for stream in streams:
        assert stream.frame() == {"retry": "3000"}
    wait_for(lambda: _subscribers() == 8, timeout=5, what="eight subscriptions")

    stats = pool.get_stats()
    assert stats["pool_size"] - stats["pool_available"] == checked_out_before
    # Authentication borrows a shared thread; no stream keeps one of its own.
    assert threading.active_count() - threads_before <= 2

    streams.pop().close()
    wait_for(lambda: _subscribers() == 7, timeout=5, what="the subscription to go")
    for stream in streams:
        stream.close()
    wait_for(lambda: _subscribers() == 0, timeout=5, what="every subscription to go")


def _run_with_pending_decisions(n: int) -> tuple[CleanupRun, list[StopDecision]]:
    run = CleanupRun.new(trigger=CleanupRun.Trigger.API)
    run.save()
    decisions = stop_decisions_create(run, [Outcome.PENDING] * n)
    CleanupRun.objects.filter(pk=run.pk).update(swept_at=run.started_at)
    run.refresh_from_db()
    return run, decisions


def test_last_event_id_resumes_after_a_reconnect_without_losing_a_decision(
    asgi_server, staff_cookie
):
    run, decisions = _run_with_pending_decisions(4)
    stream = Stream(asgi_server, staff_cookie)
    wait_for(lambda: _subscribers() == 1, timeout=5, what="the stream to subscribe")
    progress_publish(run, "swept", decisions)
    seen_id, swept = stream.event()
    assert [d["session"] for d in swept["decisions"]] == [f"proj/s{i}" for i in range(4)]
    decision_settle(decisions[0], Outcome.STOPPED, "stopped")
    seen_id, first = stream.event()
    assert (first["decision"], first["outcome"]) == (decisions[0].pk, "stopped")
    stream.close()
    wait_for(lambda: _subscribers() == 0, timeout=5, what="the subscription to go")

    # While the client is away, the other three settle and the run finishes.
    decision_settle(decisions[1], Outcome.STOPPED, "stopped")
    decision_settle(decisions[2], Outcome.FAILED, "engine unreachable")
    decision_settle(decisions[3], Outcome.SKIPPED, "not stopped after all")

    again = Stream(asgi_server, staff_cookie, last_event_id=seen_id)
    missed = [again.event()[1] for _ in range(4)]
    assert [(e.get("decision"), e["phase"]) for e in missed] == [
        (decisions[1].pk, "stopping"),
        (decisions[2].pk, "stopping"),
        (decisions[3].pk, "stopping"),
        (None, "finished"),
    ]
    assert missed[1]["outcome"] == "failed" and missed[1]["detail"] == "engine unreachable"
    # Then live again, nothing sent twice.
    control.cleanup_resume(control.Actor("bob"))
    assert again.event()[1]["phase"] == "resumed"
    again.close()


def test_a_client_away_longer_than_the_events_kept_is_told_to_reload(asgi_server, staff_cookie):
    control.cleanup_pause(control.Actor("alice"))
    stream = Stream(asgi_server, staff_cookie, last_event_id="1-0")
    assert stream.frame() == {"retry": "3000"}
    assert stream.frame()["event"] == "reset"
    stream.close()


def test_streams_beyond_the_caps_are_refused_with_429(asgi_server, staff_cookie, settings):
    settings.LIVE_STREAMS_PER_USER, settings.LIVE_STREAMS_MAX = 2, 3
    other = _cookie(user_create("second-operator", is_staff=True))
    first, second = Stream(asgi_server, staff_cookie), Stream(asgi_server, staff_cookie)
    assert (first.response.status, second.response.status) == (200, 200)

    assert _refusal(asgi_server, staff_cookie) == (
        429,
        "too many live streams for this user (2)",
    )
    third = Stream(asgi_server, other)
    assert third.response.status == 200
    assert _refusal(asgi_server, other) == (429, "too many live streams on this server (3)")

    first.close()
    wait_for(lambda: streams_open.total() == 2, timeout=5, what="a stream to close")
    fourth = Stream(asgi_server, other)
    assert fourth.response.status == 200
    for stream in (second, third, fourth):
        stream.close()
