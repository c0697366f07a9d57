"""The operations dashboard in a real browser: Debian's Chromium driven by Playwright,
against the app served by uvicorn with a real Celery worker and Docker engine.

Screenshots of each page are saved under KOSUKE_SCREENSHOTS (default
.artifacts/screenshots), to be looked at; they are not committed.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta as td
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client

from cleanup.models import CleanupRun, StopDecision
from tests.builders import session_with_running_preview, user_create
from tests.conftest import _service_missing

SCREENSHOTS = Path(
    os.environ.get(
        "KOSUKE_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".artifacts/screenshots"
    )
)
PASSWORD = "a-long-operator-password"
Outcome = StopDecision.Outcome


@pytest.fixture(scope="module")
def chromium():
    """Chromium from Debian (Playwright cannot download its own browsers here)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        _service_missing("no chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium, asgi_server, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(
        base_url=asgi_server.url, viewport={"width": 1400, "height": 1000}
    )
    yield context
    context.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def _log_in(context, username: str = "operator"):
    user_create(username, password=PASSWORD, is_staff=True)
    page = context.new_page()
    page.goto("/ops/")
    assert "/admin/login/" in page.url  # asked to log in first, then sent back
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/ops/")
    page.wait_for_selector('#feed[data-state="live"]')
    return page


def test_a_user_who_is_not_staff_is_refused(browser):
    client = Client()
    client.force_login(user_create("member"))
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    browser.add_cookies(
        [{"name": cookie.key, "value": cookie.value, "domain": "127.0.0.1", "path": "/"}]
    )
    page = browser.new_page()
    response = page.goto("/ops/")
    assert response.status == 403
    assert "Operators only" in page.inner_text("main")
    _shot(page, "refused")


def test_pausing_shows_on_every_open_dashboard_without_a_reload(browser):
    page = _log_in(browser)
    watcher = browser.new_page()
    watcher.goto("/ops/")
    watcher.wait_for_selector('#feed[data-state="live"]')
    watcher.evaluate("window.notReloaded = true")
    assert watcher.inner_text("#cleanup-state") == "running"
    _shot(page, "overview")

    page.fill("#pause-form input[name=reason]", "engine upgrade")
    page.click("#pause-form button")
    page.wait_for_selector("#cleanup-state[data-paused=true]")
    assert "Scheduled cleanup is paused by operator" in page.inner_text(".message")
    watcher.wait_for_selector("#cleanup-state[data-paused=true]")
    assert "Paused by operator" in watcher.inner_text("#pause-detail")
    assert watcher.evaluate("window.notReloaded") is True
    assert watcher.is_visible("#resume-form") and not watcher.is_visible("#pause-form")
    _shot(watcher, "overview-paused")

    page.fill("#resume-form input[name=reason]", "done")
    page.click("#resume-form button")
    watcher.wait_for_selector("#cleanup-state[data-paused=false]")


def test_a_sweep_started_from_the_page_shows_its_decisions_live_and_can_be_cancelled(
    browser, worker, alice, previews_on_docker, settings
):
    from tests.preview_image import IGNORE_SIGTERM, preview_image_build

    # Dev servers that ignore SIGTERM: each stop takes the stop timeout, and the worker's
    # four threads are busy while the last stops wait their turn.
    settings.PREVIEW_STOP_TIMEOUT_SECONDS = 4
    settings.PREVIEW_IMAGE = preview_image_build(
        previews_on_docker, tag="kosuke-preview-stubborn:latest", command=IGNORE_SIGTERM
    )
    for n in range(6):
        session_with_running_preview(alice, session_id=f"idle-{n}", idle_for=td(hours=1))
    page = _log_in(browser)

    page.fill("#sweep-form input[name=reason]", "browser test")
    page.click("#sweep-form button")
    page.wait_for_url("**/ops/runs/*/")
    page.evaluate("window.notReloaded = true")
    page.wait_for_selector("#feed[data-state=live]")
    # The decisions appear (from the page, or the feed once swept), then settle live.
    page.wait_for_function("document.querySelectorAll('#decisions tr[data-decision]').length == 6")
    _shot(page, "run-live")
    page.fill("#cancel-form input[name=reason]", "too many at once")
    page.click("#cancel-form button")
    assert "stop(s) cancelled" in page.inner_text(".message")
    page.evaluate("window.notReloaded = true")

    page.wait_for_selector("#run-state:text('finished')", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    run = CleanupRun.objects.with_counts().get()
    assert run.is_finished and run.stopped + run.cancelled == 6 and run.cancelled >= 1
    shown = page.eval_on_selector_all(
        "#decisions .outcome", "cells => cells.map(cell => cell.dataset.outcome)"
    )
    assert sorted(shown) == sorted(run.decisions.values_list("outcome", flat=True))
    counts = {
        name: int(page.inner_text(f'[data-count="{name}"]'))
        for name in ("stopped", "cancelled", "pending")
    }
    assert counts == {"stopped": run.stopped, "cancelled": run.cancelled, "pending": 0}
    assert "cancelled by operator: too many at once" in page.inner_text("#decisions")
    _shot(page, "run-finished")

    page.goto("/ops/runs/")
    assert f"/ops/runs/{run.pk}/" in page.inner_html("table.runs")
    _shot(page, "runs")


def test_the_engines_card_shows_each_engine_with_its_room_and_one_down(browser, settings):
    from kosuke.health import engine_reports_record

    settings.PREVIEW_ENGINES = "a=unix:///run/a.sock?capacity=300,b=unix:///run/b.sock?capacity=100"
    engine_reports_record(
        reached=["a"],
        unreachable={"b": "no worker of engine b answered within 35 s"},
        running={"a": 0},
    )
    page = _log_in(browser)

    rows = page.locator("#card-engines tbody tr")
    assert rows.count() == 2
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert first.startswith("a") and "reachable" in first and "0 / 300" in first
    assert second.startswith("b") and "unreachable" in second and "0 / 100" in second
    assert "no worker of engine b answered" in second
    _shot(page, "engines")
