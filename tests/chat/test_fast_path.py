"""The heartbeat with a token is answered beside Django (chat.heartbeat_asgi) exactly as
Django answers it; everything else still reaches Django, with the body intact.

Requests go to the ASGI application itself (kosuke.asgi), as uvicorn hands them on.
Whether Django answered is told by its request_started signal.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started

from chat.tokens import api_token_create
from kosuke.asgi import application, django_application
from kosuke.embedded import free_port
from previews.models import Preview
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db(transaction=True)
HEARTBEAT = "/api/projects/proj-1/chat-sessions/sess-1/heartbeat"


def post(
    app, path: str, body: bytes, scheme: str = "http", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """POST to an ASGI app; the answer's status, headers and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (name.replace("_", "-").encode(), value.encode())
            for name, value in ({"host": "127.0.0.1"} | headers).items()
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }

    async def call():
        communicator = ApplicationCommunicator(app, scope)
        await communicator.send_input({"type": "http.request", "body": body})
        start = await communicator.receive_output(10)
        answer = await communicator.receive_output(10)
        await communicator.wait(10)
        return start, answer

    start, answer = async_to_sync(call)()
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, answer["body"]


@pytest.fixture
def django_answers():
    """How many requests reached Django."""
    seen = []

    def count(**_):
        seen.append(1)

    request_started.connect(count)
    yield seen
    request_started.disconnect(count)


@pytest.fixture
def token(alice) -> str:
    session = chat_session_create(alice)
    Preview.objects.create(session=session, state="running", started_at=session.created_at)
    return api_token_create(user=alice)[1]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_heartbeat_with_a_token_gets_django_s_answer_without_django(
    token, django_answers, scheme
):
    body = json.dumps({"client_id": "tab-1"}).encode()
    bearer = f"Bearer {token}"
    through_django = post(django_application, HEARTBEAT, body, scheme, authorization=bearer)
    assert len(django_answers) == 1

    beside_django = post(application, HEARTBEAT, body, scheme, authorization=bearer)

    assert len(django_answers) == 1  # answered without Django
    status, headers, content = beside_django
    assert (status, headers) == through_django[:2]
    answer, expected = json.loads(content), json.loads(through_django[2])
    assert answer.pop("last_seen_at")[:11] == expected.pop("last_seen_at")[:11]
    assert answer == expected
    assert answer["viewers"] == 1 and answer["stops_reason"] == "inactive"
    assert ("Strict-Transport-Security" in headers) == (scheme == "https")


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"client_id": "tab-1"}', {}, 401),  # no token
        (b'{"client_id": "tab-1"}', {"authorization": "Bearer ksk_unknown"}, 401),
        (b'{"client_id": 7}', None, 422),
        (b'{"client_id": "tab-1", "extra": 1}', None, 422),
        (b"not json", None, 400),
        (b'{"client_id": "' + b"x" * 300_000 + b'"}', None, 413),
    ],
    ids=["no token", "unknown token", "wrong type", "unknown field", "not json", "too big"],
)
def test_anything_else_is_answered_by_django_as_before(
    token, django_answers, body, headers, status
):
    headers = {"authorization": f"Bearer {token}"} if headers is None else headers
    expected = post(django_application, HEARTBEAT, body, **headers)

    answer = post(application, HEARTBEAT, body, **headers)

    assert answer[0] == expected[0] == status
    assert answer[2] == expected[2]
    assert len(django_answers) == 2  # both through Django


def test_an_unknown_session_and_a_foreign_host_are_django_s_to_refuse(token, django_answers):
    body = b'{"client_id": "tab-1"}'
    missing = HEARTBEAT.replace("sess-1", "sess-2")

    status, _headers, content = post(application, missing, body, authorization=f"Bearer {token}")

    assert status == 404
    assert json.loads(content) == {"error": "chat session 'sess-2' not found in project 'proj-1'"}
    assert len(django_answers) == 1

    status, _headers, _content = post(
        application, HEARTBEAT, body, authorization=f"Bearer {token}", host="evil.example"
    )
    assert status == 400
    assert len(django_answers) == 2


def test_a_store_that_is_down_gets_the_api_s_503_without_a_second_wait(
    token, django_answers, settings
):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    body = b'{"client_id": "tab-1"}'
    expected = post(django_application, HEARTBEAT, body, authorization=f"Bearer {token}")

    answer = post(application, HEARTBEAT, body, authorization=f"Bearer {token}")

    assert answer == expected
    assert answer[0] == 503 and answer[1]["Retry-After"] == "5"
    assert json.loads(answer[2])["error"].startswith("presence store (Redis) unavailable")
    assert len(django_answers) == 1  # only the request sent to Django itself
