from __future__ import annotations

import pytest
from django.test import Client

from chat.tokens import api_token_create
from tests.builders import user_create


def api_client(user) -> Client:
    """A client that authenticates like an integration: with a bearer token."""
    _token, raw_token = api_token_create(user=user)
    return Client(headers={"Authorization": f"Bearer {raw_token}"})


@pytest.fixture
def alice(db):
    return user_create("alice")


@pytest.fixture
def bob(db):
    return user_create("bob")


@pytest.fixture
def alice_api(alice) -> Client:
    return api_client(alice)


@pytest.fixture
def bob_api(bob) -> Client:
    return api_client(bob)
