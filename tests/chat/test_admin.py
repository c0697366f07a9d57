"""The Django admin for chat sessions and API tokens."""

from __future__ import annotations

from datetime import timedelta as td

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from chat.models import ApiToken, ChatMessage
from chat.tokens import api_token_user
from kosuke.redis_client import redis_client
from previews.models import Preview
from tests.builders import chat_session_create, user_create

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat/chatsession/"


def test_the_session_list_shows_activity_levels(alice, operator):
    now = timezone.now()
    chat_session_create(alice, session_id="fresh", last_activity_at=now)
    chat_session_create(alice, session_id="stale", last_activity_at=now - td(hours=3))

    page = operator.get(CHANGELIST).content.decode()

    assert "fresh" in page and "active (&lt; 2 min)" in page
    assert "stale" in page and "background (&gt; 10 min)" in page


@pytest.mark.parametrize(
    ("level", "shown", "hidden"), [("active", "fresh", "stale"), ("background", "stale", "fresh")]
)
def test_the_session_list_filters_by_activity_level(alice, operator, level, shown, hidden):
    now = timezone.now()
    chat_session_create(alice, session_id="fresh", last_activity_at=now)
    chat_session_create(alice, session_id="stale", last_activity_at=now - td(hours=3))

    page = operator.get(CHANGELIST, {"level": level}).content.decode()

    assert f">{shown}<" in page and f">{hidden}<" not in page


def test_the_session_list_searches_by_owner_and_ids(alice, bob, operator):
    chat_session_create(alice, session_id="alices")
    chat_session_create(bob, session_id="bobs")

    page = operator.get(CHANGELIST, {"q": "bob"}).content.decode()

    assert ">bobs<" in page and ">alices<" not in page


def test_a_session_page_shows_its_messages_read_only(alice, operator):
    session = chat_session_create(alice)
    ChatMessage.objects.create(session=session, content="make it pop")

    page = operator.get(f"{CHANGELIST}{session.pk}/change/").content.decode()

    assert "make it pop" in page
    assert 'name="last_activity_at"' not in page  # read-only, not an input


def test_creating_a_token_in_the_admin_shows_it_once(alice, operator):
    response = operator.post(
        "/admin/chat/apitoken/add/", {"user": alice.pk, "name": "laptop"}, follow=True
    )

    token = ApiToken.objects.get()
    shown = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    raw_token = shown[0].removeprefix("API token for alice: ").split()[0]
    assert len(shown) == 1 and raw_token.startswith(token.prefix)
    assert api_token_user(raw_token) == alice
    assert raw_token not in operator.get("/admin/chat/apitoken/").content.decode()


@pytest.mark.parametrize("action", ["stop_preview_now", "open_preview"])
def test_preview_actions_need_the_change_permission(alice, client, settings, action):
    settings.PREVIEW_REQUEST_TIMEOUT_SECONDS = 1
    viewer = user_create("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_chatsession"))
    client.force_login(viewer)
    session = chat_session_create(alice)

    response = client.post(
        CHANGELIST, {"action": action, "_selected_action": [session.pk]}, follow=True
    )

    assert response.status_code == 200
    assert redis_client().llen("engine.local") == 0  # nothing was asked of a worker
    assert not Preview.objects.filter(session=session).exists()
