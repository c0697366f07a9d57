"""Migration 0005: previews record their engine by name, no longer by URL."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.builders import chat_session_create, user_create
from tests.migrations import migrate_to, migrate_to_latest

BEFORE = [("previews", "0004_retention")]
AFTER = [("previews", "0005_engine_names")]


@pytest.mark.django_db(transaction=True)
def test_engine_urls_become_the_name_of_the_one_engine_and_back():
    (local,) = settings.PREVIEW_ENGINE_LIST  # the tests run one engine: local, at DOCKER_HOST
    owner = user_create("alice")
    sessions = [chat_session_create(owner, session_id=f"s{n}") for n in range(3)]
    apps = migrate_to(BEFORE)
    Preview = apps.get_model("previews", "Preview")
    for session, engine in zip(sessions, [local.url, "unix:///older.sock", ""], strict=True):
        Preview.objects.create(session_id=session.pk, state="stopped", engine=engine)

    apps = migrate_to(AFTER)

    Preview = apps.get_model("previews", "Preview")
    engines = dict(Preview.objects.values_list("session__session_id", "engine"))
    # With one engine, every preview was on it, whatever URL it was reached by then.
    assert engines == {"s0": "local", "s1": "local", "s2": ""}

    apps = migrate_to(BEFORE)

    Preview = apps.get_model("previews", "Preview")
    engines = dict(Preview.objects.values_list("session__session_id", "engine"))
    assert engines == {"s0": local.url, "s1": local.url, "s2": ""}
    migrate_to_latest()
