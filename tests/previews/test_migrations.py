"""Migration 0005: previews record their engine by name, no longer by URL."""

from __future__ import annotations

import pytest

from previews.engines import engines
from tests.builders import chat_session_create, user_create
from tests.migrations import migrate_to, migrate_to_latest

BEFORE = [("previews", "0004_retention")]
AFTER = [("previews", "0005_engine_names")]


@pytest.mark.django_db(transaction=True)
def test_engine_urls_become_the_name_of_the_one_engine_and_back():
    (local,) = engines().values()  # the tests run one engine: local, at DOCKER_HOST
    owner = user_create("alice")
    sessions = [chat_session_create(owner, session_id=f"s{n}") for n in range(3)]
    apps = migrate_to(BEFORE)
    Preview = apps.get_model("previews", "Preview")
    for session, engine in zip(sessions, [local.url, "unix:///older.sock", ""], strict=True):
        Preview.objects.create(session_id=session.pk, state="stopped", engine=engine)

    apps = migrate_to(AFTER)

    Preview = apps.get_model("previews", "Preview")
    held = dict(Preview.objects.values_list("session__session_id", "engine"))
    # With one engine, every preview was on it, whatever URL it was reached by then.
    assert held == {"s0": "local", "s1": "local", "s2": ""}

    apps = migrate_to(BEFORE)

    Preview = apps.get_model("previews", "Preview")
    held = dict(Preview.objects.values_list("session__session_id", "engine"))
    assert held == {"s0": local.url, "s1": local.url, "s2": ""}
    migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_with_several_engines_an_unknown_url_goes_to_the_engine_at_docker_host(settings):
    settings.DOCKER_HOST = "unix:///run/old.sock"
    settings.PREVIEW_ENGINES = "new=tcp://10.0.0.7:2375,old=unix:///run/old.sock"
    owner = user_create("alice")
    sessions = [chat_session_create(owner, session_id=f"s{n}") for n in range(3)]
    apps = migrate_to(BEFORE)
    Preview = apps.get_model("previews", "Preview")
    urls = ["tcp://10.0.0.7:2375", "unix:///run/old.sock", "unix:///var/run/docker.sock"]
    for session, engine in zip(sessions, urls, strict=True):
        Preview.objects.create(session_id=session.pk, state="running", engine=engine)

    apps = migrate_to(AFTER)

    Preview = apps.get_model("previews", "Preview")
    engines_now = dict(Preview.objects.values_list("session__session_id", "engine"))
    # The last was reached by another spelling of the one engine there was: DOCKER_HOST's.
    assert engines_now == {"s0": "new", "s1": "old", "s2": "old"}
    migrate_to_latest()
