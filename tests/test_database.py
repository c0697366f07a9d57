"""A request that waits on something else gives its pooled connection back."""

from __future__ import annotations

import asyncio

import pytest
from django.db import OperationalError, connection, connections, transaction

from chat import services
from chat.models import ChatMessage
from kosuke.database import connection_give_back, database_call
from tests.builders import chat_session_create, session_address, user_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_waiting_request_holds_no_connection():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.connection is not None

    connection_give_back()

    assert connection.connection is None
    with connection.cursor() as cursor:  # the next query takes one again
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_transaction_keeps_its_connection():
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        connection_give_back()
        assert connection.connection is not None


def test_a_stored_message_is_answered_even_if_its_connection_cannot_be_given_back(
    monkeypatch, caplog
):
    session = chat_session_create(user_create("alice"))

    def fail_to_give_back(self):
        raise OperationalError("the pool is closed")

    # On the class: database_call runs the work on another thread, with its own wrapper.
    monkeypatch.setattr(type(connections["default"]), "_close", fail_to_give_back)
    with caplog.at_level("WARNING", logger="kosuke.database"):
        message = asyncio.run(
            database_call(services.message_send, content="hello", **session_address(session))
        )
    monkeypatch.undo()

    assert ChatMessage.objects.filter(pk=message.pk, content="hello").exists()
    assert "database connection dropped, not given back: the pool is closed" in caplog.text
