"""The heartbeat and a message with a token are answered beside Django (chat.fast_path)
exactly as Django answers them; everything else still reaches Django, with the body
intact.

Requests go to the ASGI application itself (kosuke.asgi), as uvicorn hands them on.
Whether Django answered is told by its request_started signal.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started
from django.db.backends.signals import connection_created

from chat.models import ChatMessage, ChatSession
from chat.tokens import api_token_create
from kosuke.asgi import application, django_application
from kosuke.embedded import free_port
from previews.models import Preview
from tests.builders import chat_session_create

pytestmark = pytest.mark.django_db(transaction=True)
SESSION = "/api/projects/proj-1/chat-sessions/sess-1"
HEARTBEAT = f"{SESSION}/heartbeat"


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
def statements():
    """Each SQL statement any thread runs: (its first word, whether it ran inside a
    transaction); one outside is a commit of its own."""
    seen = []

    def record(execute, sql, params, many, context):
        seen.append((sql.split()[0], context["connection"].in_atomic_block))
        return execute(sql, params, many, context)

    def attach(sender, connection, **kwargs):
        if record not in connection.execute_wrappers:
            connection.execute_wrappers.append(record)

    connection_created.connect(attach)
    yield seen
    connection_created.disconnect(attach)


@pytest.fixture
def token(alice) -> str:
    session = chat_session_create(alice)
    Preview.objects.create(session=session, state="running", started_at=session.created_at)
    return api_token_create(user=alice)[1]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_heartbeat_with_a_token_gets_django_s_answer_without_django(
    token, django_answers, statements, scheme
):
    body = json.dumps({"client_id": "tab-1"}).encode()
    bearer = f"Bearer {token}"
    through_django = post(django_application, HEARTBEAT, body, scheme, authorization=bearer)
    assert len(django_answers) == 1

    statements.clear()

    beside_django = post(application, HEARTBEAT, body, scheme, authorization=bearer)

    assert len(django_answers) == 1  # answered without Django
    assert statements == []  # the token and the session are known: Redis only
    status, headers, content = beside_django
    assert (status, headers) == through_django[:2]
    answer, expected = json.loads(content), json.loads(through_django[2])
    assert answer.pop("last_seen_at")[:11] == expected.pop("last_seen_at")[:11]
    assert answer == expected
    assert answer["viewers"] == 1 and answer["stops_reason"] == "inactive"
    assert ("Strict-Transport-Security" in headers) == (scheme == "https")


def test_a_message_with_a_token_gets_django_s_answer_without_django(
    token, django_answers, statements
):
    body = json.dumps({"content": "make the button blue", "role": "user"}).encode()
    bearer = f"Bearer {token}"
    through_django = post(django_application, SESSION, body, authorization=bearer)
    assert len(django_answers) == 1
    before = ChatSession.objects.get().last_activity_at
    statements.clear()

    beside_django = post(application, SESSION, body, authorization=bearer)

    assert len(django_answers) == 1  # answered without Django
    assert statements == [("WITH", False)]  # one statement, its own commit (token known)
    status, headers, content = beside_django
    assert (status, headers) == through_django[:2]
    assert status == 201
    answer, expected = json.loads(content), json.loads(through_django[2])
    assert answer.pop("id") == expected.pop("id") + 1
    assert answer.pop("created_at") > expected.pop("created_at")
    assert answer == expected == {"role": "user", "content": "make the button blue"}
    stored = ChatMessage.objects.order_by("id").last()
    assert (stored.pk, stored.content) == (json.loads(content)["id"], "make the button blue")
    assert ChatSession.objects.get().last_activity_at == stored.created_at > before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"content": ""}', 422),
        (b'{"content": "hi", "role": "robot"}', 422),
        (b'{"content": 7}', 422),
        (b"not json", 400),
    ],
    ids=["empty", "unknown role", "wrong type", "not json"],
)
def test_a_message_django_refuses_is_refused_by_django_and_stores_nothing(
    token, django_answers, body, status
):
    answer = post(application, SESSION, body, authorization=f"Bearer {token}")

    assert answer[0] == status
    assert len(django_answers) == 1
    assert not ChatMessage.objects.exists()


def test_a_message_to_an_unknown_session_is_django_s_404_and_stores_nothing(token, django_answers):
    missing = SESSION.replace("sess-1", "sess-2")

    status, _headers, content = post(
        application, missing, b'{"content": "hi"}', authorization=f"Bearer {token}"
    )

    assert status == 404
    assert json.loads(content) == {"error": "chat session 'sess-2' not found in project 'proj-1'"}
    assert len(django_answers) == 1
    assert not ChatMessage.objects.exists()


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
