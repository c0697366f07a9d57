"""The operator API, the cron endpoint and /metrics: who may call them, what bad input
gets, and pause and resume (no worker needed: runs are queued, or swept in-process)."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.test import Client
from django.utils import timezone

from chat.tokens import api_token_create
from cleanup.control import Actor, cleanup_pause, pause_state
from cleanup.models import CleanupRun, OperatorAction, StopDecision
from cleanup.sweep import sweep
from kosuke.health import ENGINE_REPORTS_KEY, engine_reports
from kosuke.redis_client import redis_client
from previews.models import Preview, PreviewState
from tests.builders import api_client, chat_session_create, user_create

Outcome = StopDecision.Outcome
CRON_SECRET = "a-cron-secret-long-enough-to-guess-nothing"
METRICS_TOKEN = "a-metrics-token"


@pytest.fixture
def staff(db):
    return user_create("operator", is_staff=True)


@pytest.fixture
def staff_api(staff) -> Client:
    return api_client(staff)


@pytest.fixture
def finished_run(alice) -> CleanupRun:
    """A finished run with one failed stop."""
    run = CleanupRun.objects.create(
        trigger="beat", threshold_minutes=30, batch_size=10, swept_at=timezone.now()
    )
    StopDecision.objects.create(
        run=run,
        chat_session=chat_session_create(alice, project_id="p", session_id="s"),
        project_id="p",
        session_id="s",
        stop_reason="inactive",
        reason="idle",
        level="background",
        outcome=Outcome.FAILED,
        outcome_detail="engine unreachable",
        settled_at=timezone.now(),
    )
    return run


def _routes(run_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("post", "/api/ops/cleanup-runs", {"dry_run": True}),
        ("get", "/api/ops/cleanup-runs", None),
        ("get", f"/api/ops/cleanup-runs/{run_id}", None),
        ("post", f"/api/ops/cleanup-runs/{run_id}/cancel", {}),
        ("post", f"/api/ops/cleanup-runs/{run_id}/retry", {}),
        ("delete", f"/api/ops/cleanup-runs/{run_id}", None),
        ("get", "/api/ops/cleanup/pause", None),
        ("post", "/api/ops/cleanup/pause", {"reason": "deploy"}),
        ("post", "/api/ops/cleanup/resume", {}),
        ("get", "/api/ops/stats", None),
    ]


def _call(client: Client, method: str, path: str, body: dict | None, **extra):
    if body is None:
        return getattr(client, method)(path, **extra)
    return getattr(client, method)(path, body, content_type="application/json", **extra)


def _history() -> tuple[int, int, int]:
    return (
        CleanupRun.objects.count(),
        OperatorAction.objects.count(),
        StopDecision.objects.exclude(outcome=Outcome.FAILED).count(),
    )


@pytest.mark.parametrize("who", ["anonymous", "wrong token", "ordinary user", "owner of nothing"])
def test_only_staff_reach_the_operator_routes_and_nothing_changes(who, alice, finished_run):
    clients = {
        "anonymous": (Client(), 401),
        "wrong token": (Client(headers={"Authorization": "Bearer not-a-token"}), 401),
        "ordinary user": (api_client(alice), 403),
        "owner of nothing": (api_client(user_create("nobody")), 403),
    }
    client, status = clients[who]
    chat_session_create(alice)
    before = _history()

    for method, path, body in _routes(finished_run.pk):
        response = _call(client, method, path, body)
        assert response.status_code == status, (method, path, response.content)
        assert response.json()["error"]

    assert _history() == before
    assert pause_state() is None


def test_staff_reach_every_operator_route_with_a_token(staff_api, finished_run):
    statuses = [
        _call(staff_api, method, path, body).status_code
        for method, path, body in _routes(finished_run.pk)
    ]

    # Trigger (queued), list, get, cancel a finished run (409), retry its failed stop
    # (queued), delete it, pause, pause, resume, stats.
    assert statuses == [202, 200, 200, 409, 202, 204, 200, 200, 200, 200]
    kinds = list(OperatorAction.objects.order_by("pk").values_list("kind", "actor_name"))
    assert kinds == [
        ("trigger", "operator"),
        ("trigger", "operator"),  # the retry's new run
        ("retry", "operator"),
        ("delete", "operator"),
        ("pause", "operator"),
        ("resume", "operator"),
    ]


def test_a_browser_session_needs_the_csrf_token(staff):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)

    refused = browser.post("/api/ops/cleanup/pause", {}, content_type="application/json")
    assert refused.status_code == 403 and pause_state() is None

    browser.get("/admin/")  # sets the CSRF cookie, as a page of the site would
    token = browser.cookies["csrftoken"].value
    paused = browser.post(
        "/api/ops/cleanup/pause",
        {"reason": "upgrading Docker"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert paused.status_code == 200
    assert pause_state().describe() == "paused by operator: upgrading Docker"


BAD_BODIES = {
    "/api/ops/cleanup-runs": [
        ({"dry_run": "yes"}, 422),
        ({"threshold_minutes": 0}, 422),
        ({"threshold_minutes": "30"}, 422),
        ({"batch_size": 10_001}, 422),
        ({"timeout_seconds": 301}, 422),
        ({"wait": 1}, 422),
        ({"surprise": True}, 422),
        ({"reason": "nul\x00"}, 422),
        ({"session": "no-slash"}, 400),
        ({"session": "proj-1/missing"}, 404),
        ({"owner": "alice"}, 400),
        ([], 422),
    ],
    "/api/ops/cleanup/pause": [
        ({"until": "2020-01-01T00:00:00Z"}, 400),
        ({"until": "2030-01-01T00:00:00"}, 422),  # no offset: which time zone?
        ({"until": "tomorrow"}, 422),
        ({"reason": 5}, 422),
        ({"reason": "x" * 501}, 422),
        ({"for": "ever"}, 422),
    ],
    "/api/ops/cleanup/resume": [({"reason": ["a"]}, 422), ({"extra": 1}, 422)],
}
BAD_QUERIES = [
    "/api/ops/cleanup-runs?trigger=sometimes",
    "/api/ops/cleanup-runs?dry_run=perhaps",
    "/api/ops/cleanup-runs?outcome=great",
    "/api/ops/cleanup-runs?started_after=yesterday",
    "/api/ops/cleanup-runs?limit=0",
    "/api/ops/cleanup-runs?offset=-1",
    "/api/ops/stats?window=5m",
    "/api/ops/stats?window=31d",
    "/api/ops/stats?window=0h",
    "/api/ops/cleanup-runs/not-a-number",
    "/api/ops/cleanup-runs?trigger=beat&tigger=beat",
    "/api/ops/stats?window=24h&windows=7d",
    "/api/ops/cleanup/pause?paused=true",
]


def test_bad_input_gets_a_4xx_that_says_why_and_changes_nothing(staff_api, alice, finished_run):
    chat_session_create(alice)
    before = _history()

    for path, cases in BAD_BODIES.items():
        for body, status in cases:
            response = _call(staff_api, "post", path, body)
            assert response.status_code == status, (path, body, response.content)
            assert response.json()["error"], (path, body)
    for path in BAD_QUERIES:
        response = staff_api.get(path)
        assert response.status_code == 422, (path, response.content)
        assert response.json()["error"]

    assert _history() == before and pause_state() is None


def test_runs_that_do_not_exist_or_are_in_the_wrong_state_are_refused(staff_api, finished_run):
    unfinished = CleanupRun.objects.create(trigger="api", threshold_minutes=30, batch_size=1)
    before = _history()

    assert staff_api.get("/api/ops/cleanup-runs/999999").status_code == 404
    assert staff_api.delete("/api/ops/cleanup-runs/999999").status_code == 404
    assert _call(staff_api, "post", "/api/ops/cleanup-runs/999999/cancel", {}).status_code == 404
    deleting = staff_api.delete(f"/api/ops/cleanup-runs/{unfinished.pk}")
    assert deleting.status_code == 409 and "not finished" in deleting.json()["error"]
    retrying = _call(staff_api, "post", f"/api/ops/cleanup-runs/{unfinished.pk}/retry", {})
    assert retrying.status_code == 409 and "no failed stops" in retrying.json()["error"]
    cancelling = _call(staff_api, "post", f"/api/ops/cleanup-runs/{finished_run.pk}/cancel", {})
    assert cancelling.status_code == 409 and "finished" in cancelling.json()["error"]

    assert _history() == before


def test_the_run_list_filters_and_pages(staff_api, finished_run):
    empty = CleanupRun.objects.create(
        trigger="cron", threshold_minutes=30, batch_size=1, swept_at=timezone.now(), dry_run=True
    )

    def ids(query: str) -> list[int]:
        response = staff_api.get(f"/api/ops/cleanup-runs{query}")
        assert response.status_code == 200, response.content
        return [run["id"] for run in response.json()["items"]]

    assert ids("") == [empty.pk, finished_run.pk]  # newest first
    assert ids("?trigger=cron") == [empty.pk]
    assert ids("?dry_run=false") == [finished_run.pk]
    assert ids("?outcome=failed") == [finished_run.pk]
    StopDecision.objects.create(
        run=finished_run, project_id="p", session_id="t", stop_reason="inactive", reason="idle",
        level="background", outcome=Outcome.FAILED, settled_at=timezone.now(),
    )  # fmt: skip
    [failing] = staff_api.get("/api/ops/cleanup-runs?outcome=failed").json()["items"]
    assert (failing["found"], failing["failed"]) == (2, 2)  # counted once each
    assert ids("?outcome=stopped") == []
    assert ids("?found_something=true") == [finished_run.pk]
    assert ids("?found_something=false") == [empty.pk]
    assert ids("?limit=1&offset=1") == [finished_run.pk]
    later = (timezone.now() + td(minutes=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"?started_after={later}") == []
    listed = staff_api.get("/api/ops/cleanup-runs?trigger=beat").json()
    assert listed["count"] == 1
    assert listed["items"][0] | {"failed": 2, "finished": True} == listed["items"][0]


def test_a_run_shows_its_decisions_and_who_did_what_to_it(staff_api, finished_run):
    _call(staff_api, "post", f"/api/ops/cleanup-runs/{finished_run.pk}/retry", {"reason": "fixed"})

    run = staff_api.get(f"/api/ops/cleanup-runs/{finished_run.pk}").json()

    [decision] = run["decisions"]
    assert (decision["outcome"], decision["outcome_detail"]) == ("failed", "engine unreachable")
    assert run["errors"] == [{"session": "p/s", "error": "engine unreachable"}]
    [action] = run["actions"]
    assert (action["kind"], action["actor"], action["reason"]) == ("retry", "operator", "fixed")
    [retry_id] = run["retries"]
    assert action["details"] == {"retry_run": retry_id}
    retry = staff_api.get(f"/api/ops/cleanup-runs/{retry_id}").json()
    assert (retry["retry_of"], retry["trigger"], retry["finished"]) == (
        finished_run.pk,
        "api",
        False,
    )


def test_pause_and_resume_steer_scheduled_sweeps_and_are_recorded(
    staff_api, previews_on_docker, alice
):
    session = chat_session_create(alice, last_activity_at=timezone.now() - td(hours=2))
    until = (timezone.now() + td(hours=1)).replace(microsecond=0)

    paused = _call(
        staff_api,
        "post",
        "/api/ops/cleanup/pause",
        {"reason": "deploy", "until": until.isoformat()},
    ).json()
    assert (paused["paused"], paused["by"], paused["reason"]) == (True, "operator", "deploy")

    redis_client().delete(ENGINE_REPORTS_KEY)
    scheduled = sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=lambda *a, **k: None)
    words = f"paused by operator until {until:%Y-%m-%d %H:%M:%S} UTC: deploy"
    assert scheduled.paused and scheduled.note == f"{words}; nothing stopped"
    assert scheduled.examined == 0 and scheduled.is_finished
    # It still reports on the engine: a pause is not an outage.
    assert scheduled.engine_list_calls == 1
    assert all(report["ok"] for report in engine_reports().values())
    explicit = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=lambda *a, **k: None)
    assert not explicit.paused
    assert explicit.note == f"cleanup is {words}; this command run went ahead"
    assert Client().get("/readyz").json()["cleanup_paused"] == words

    _call(staff_api, "post", "/api/ops/cleanup/resume", {"reason": "deployed"})
    assert staff_api.get("/api/ops/cleanup/pause").json() == {
        "paused": False,
        "by": None,
        "reason": "",
        "since": None,
        "until": None,
    }
    resumed = sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=lambda *a, **k: None)
    assert not resumed.paused and resumed.note == ""
    actions = OperatorAction.objects.order_by("pk").values_list("kind", "reason")
    assert list(actions) == [("pause", "deploy"), ("resume", "deployed")]
    assert session.pk  # the session was there to be examined all along


def test_a_pause_ends_by_itself_at_its_until(db, staff):
    cleanup_pause(Actor.of(staff), reason="short", until=timezone.now() + td(minutes=5))

    assert pause_state().reason == "short"
    assert pause_state(timezone.now() + td(minutes=5, seconds=1)) is None


# --- the cron endpoint --------------------------------------------------------------


def test_the_cron_endpoint_is_off_without_a_secret(db, settings):
    settings.CRON_SECRET = ""

    response = Client().post("/api/cron/cleanup", headers={"Authorization": "Bearer anything"})

    assert response.status_code == 404 and not CleanupRun.objects.exists()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {CRON_SECRET}", f"Bearer {CRON_SECRET}x", "Bearer "],
)
def test_a_wrong_or_missing_cron_secret_is_401_and_changes_nothing(db, settings, authorization):
    settings.CRON_SECRET = CRON_SECRET
    headers = {"Authorization": authorization} if authorization else {}

    for method in ("get", "post"):
        response = getattr(Client(), method)("/api/cron/cleanup", headers=headers)
        assert response.status_code == 401 and response.json()["error"]

    assert not CleanupRun.objects.exists() and not OperatorAction.objects.exists()


def test_cron_sweeps_like_beat_and_honours_pause(db, settings, previews_on_docker, staff, alice):
    settings.CRON_SECRET = CRON_SECRET
    settings.WORKER_ENABLED = False  # swept in the request: no worker here
    cron = Client(headers={"Authorization": f"Bearer {CRON_SECRET}"})
    cleanup_pause(Actor.of(staff), reason="maintenance")

    paused = cron.get("/api/cron/cleanup")

    assert paused.status_code == 200
    run = CleanupRun.objects.get(pk=paused.json()["run"])
    assert (run.trigger, run.paused) == ("cron", True)
    assert paused.json()["note"] == "paused by operator: maintenance; nothing stopped"
    assert OperatorAction.objects.filter(kind="trigger", actor_name="cron", run=run).exists()

    _call(api_client(staff), "post", "/api/ops/cleanup/resume", {})
    swept = cron.post("/api/cron/cleanup").json()
    assert swept["paused"] is False and CleanupRun.objects.get(pk=swept["run"]).is_finished


def test_cron_hands_the_sweep_to_the_workers(db, settings):
    settings.CRON_SECRET = CRON_SECRET

    response = Client().post(
        "/api/cron/cleanup", headers={"Authorization": f"Bearer {CRON_SECRET}"}
    )

    assert response.status_code == 202
    assert response.json() == {"run": response.json()["run"], "paused": False, "note": ""}
    run = CleanupRun.objects.get(pk=response.json()["run"])
    assert (run.trigger, run.swept_at) == ("cron", None)  # queued for a worker


# --- metrics --------------------------------------------------------------------------


def test_metrics_need_the_token(db, settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404

    settings.METRICS_TOKEN = METRICS_TOKEN
    assert Client().get("/metrics").status_code == 401
    wrong = Client(headers={"Authorization": "Bearer nope"}).get("/metrics")
    assert wrong.status_code == 401
    _token, user_token = api_token_create(user=user_create("someone", is_staff=True))
    assert (
        Client(headers={"Authorization": f"Bearer {user_token}"}).get("/metrics").status_code == 401
    )


def test_metrics_report_the_database_and_the_counters(settings, previews_on_docker, alice):
    from tests.builders import session_with_running_preview

    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.WORKER_ENABLED = False
    session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    session_with_running_preview(alice, session_id="busy", idle_for=td(seconds=10))
    stopped = chat_session_create(alice, session_id="old")
    Preview.objects.create(session=stopped, state=PreviewState.STOPPED, engine="")
    from cleanup.stops import stop_inline

    sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline)

    response = Client(headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).get("/metrics")

    assert response.status_code == 200
    lines = set(response.content.decode().splitlines())
    assert 'kosuke_previews{state="running"} 1.0' in lines
    assert 'kosuke_previews{state="stopped"} 2.0' in lines
    assert 'kosuke_previews_running_by_level{level="active"} 1.0' in lines
    assert 'kosuke_cleanup_stops_total{outcome="stopped",reason="inactive"} 1.0' in lines
    assert "kosuke_cleanup_sweep_duration_seconds_count 1.0" in lines
    assert "kosuke_cleanup_stops_pending 0.0" in lines
    assert "kosuke_cleanup_paused 0.0" in lines
    assert 'kosuke_engine_up{engine="local"} 1.0' in lines
    assert 'kosuke_preview_starts_total{engine="local",kind="created"} 2.0' in lines
    assert 'kosuke_engine_previews_running{engine="local"} 1.0' in lines
    assert (
        f'kosuke_engine_capacity{{engine="local"}} {settings.PREVIEW_ENGINE_CAPACITY:.1f}' in lines
    )


@pytest.mark.django_db
def test_the_admin_shows_the_pause_the_statistics_and_the_operator_actions(operator, finished_run):
    cleanup_pause(Actor(name="operator"), reason="maintenance window")

    runs = operator.get("/admin/cleanup/cleanuprun/")
    actions = operator.get("/admin/cleanup/operatoraction/")

    page = runs.content.decode()
    assert runs.status_code == 200
    assert "Scheduled cleanup is paused by operator: maintenance window" in page
    assert "Last 24 h: failed 1 (failure rate 100.0%)" in page
    assert actions.status_code == 200 and "maintenance window" in actions.content.decode()


def test_a_cancel_while_the_sweep_decides_settles_what_it_records(
    staff_api, alice, previews_on_docker
):
    """The operator cancels between the sweep's start and its decisions: the sweep keeps
    the mark and settles its new stops as cancelled, by whom and why."""
    from cleanup import sweep as sweep_module
    from tests.builders import session_with_running_preview

    session_with_running_preview(alice, session_id="idle", idle_for=td(hours=1))
    handed_out = []
    deciding = sweep_module._decide_each

    def cancel_then_decide(*args, **kwargs):
        run = CleanupRun.objects.get(swept_at__isnull=True)
        cancel = _call(
            staff_api, "post", f"/api/ops/cleanup-runs/{run.pk}/cancel", {"reason": "oops"}
        )
        assert cancel.json() == {"run": run.pk, "cancelled": 0, "under_way": 0}
        return deciding(*args, **kwargs)

    sweep_module._decide_each = cancel_then_decide
    try:
        run = sweep(
            trigger=CleanupRun.Trigger.COMMAND, dispatch=lambda d, **_: handed_out.append(d)
        )
    finally:
        sweep_module._decide_each = deciding

    assert handed_out == [] and run.cancelled_at is not None
    [decision] = run.decisions.all()
    assert (decision.outcome, decision.outcome_detail) == (
        "cancelled",
        "cancelled by operator: oops",
    )


def test_metrics_still_report_the_database_when_redis_is_down(db, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    from kosuke.redis_client import redis_client

    redis_client.cache_clear()
    try:
        response = Client(headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).get("/metrics")
    finally:
        redis_client.cache_clear()

    assert response.status_code == 200
    text = response.content.decode()
    assert 'kosuke_previews{state="running"} 0.0' in text
    assert "kosuke_cleanup_stops_total" not in text
