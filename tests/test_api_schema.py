"""The API keeps the promises of its OpenAPI schema: schemathesis drives every route with
examples generated from the schema (bounded, so CI stays fast) against the real app."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from chat.tokens import api_token_create
from tests.builders import chat_session_create, user_create

# A request the schema allows may still be refused by the domain with a 400 that says why
# (a keep-alive more than a day ahead, an activity time in the future or before 2000):
# rules about the clock that a schema cannot state. Everything else schema-valid must
# get 2xx or a documented 401/404/409/503, or 403 from the operator routes: this user is
# not staff, so those answer after validating their input and change nothing (their
# staff side is tested in tests/cleanup/test_ops_api.py).
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "503"]
            }
        }
    }
)
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application(), config=CONFIG)


def only_503_of_the_server_errors(ctx, response, case) -> None:
    """503 is a documented answer (a store or the workers unavailable); any other 5xx is a
    bug."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


@pytest.fixture
def token(db, settings):
    # The test's transaction holds the connection: requests must not close it (as Django's
    # own test client arranges).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    # No worker runs here: preview routes answer the documented 503 quickly.
    settings.PREVIEW_REQUEST_TIMEOUT_SECONDS = 0.2
    user = user_create("schemathesis")
    chat_session_create(user)  # proj-1/sess-1, so some examples meet a real session
    yield api_token_create(user=user)[1]
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,  # the same examples every run: CI never fails on a new one
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_route_keeps_its_schema(case, token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        excluded_checks=[not_a_server_error],
        additional_checks=[only_503_of_the_server_errors],
    )
