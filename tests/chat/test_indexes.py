"""Sessions by last activity are read through the last_activity_at index."""

from __future__ import annotations

import json
from datetime import timedelta as td

import pytest
from django.db import connection

from chat.admin import ActivityLevelFilter
from chat.models import ChatSession
from tests.builders import sessions_bulk_insert, user_create

pytestmark = pytest.mark.django_db


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_the_last_activity_index_exists():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "chat_chatsession")

    index = constraints["chat_session_last_activity"]
    assert index["index"] and index["columns"] == ["last_activity_at"]


def test_the_admins_activity_filter_reads_through_the_index(rf):
    sessions_bulk_insert(user_create("bulk"), 20_000, spread=td(days=90))
    level = ActivityLevelFilter(rf.get("/"), {"level": ["active"]}, ChatSession, None)
    active = level.queryset(rf.get("/"), ChatSession.objects.all())

    plan = json.loads(active.explain(format="json"))[0]["Plan"]

    scans = [node for node in _plan_nodes(plan) if "Scan" in node["Node Type"]]
    assert [(node["Node Type"], node.get("Index Name")) for node in scans] == [
        ("Index Scan", "chat_session_last_activity")
    ]
