"""A request that waits on something else gives its pooled connection back."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from kosuke.database import connection_give_back

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
