"""API tokens: created by a command or the admin, shown once, stored only as a hash."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from chat.models import ApiToken
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db


def test_the_command_prints_a_token_that_authenticates(alice):
    chat_session_create(alice)
    out = StringIO()

    call_command("create_api_token", "alice", "--name", "ci", stdout=out)

    raw_token = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (alice, "ci")
    assert raw_token not in token.key_hash and raw_token.startswith(token.prefix)
    api = Client(headers={"Authorization": f"Bearer {raw_token}"})
    assert api.get("/api/projects/proj-1/chat-sessions/sess-1").status_code == 200


def test_the_command_names_an_unknown_user(db):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("create_api_token", "nobody")

    assert not ApiToken.objects.exists()


def test_a_revoked_token_stops_working(alice, alice_api):
    chat_session_create(alice)

    ApiToken.objects.filter(user=alice).delete()

    assert alice_api.get("/api/projects/proj-1/chat-sessions/sess-1").status_code == 401
