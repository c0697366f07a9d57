"""Previews on a real Docker engine: open, reopen, stop, reconcile."""

from __future__ import annotations

import threading
from datetime import timedelta as td

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kosuke.errors import ApplicationError
from previews.engine import Engine, EngineError, engine, engine_at
from previews.engines import EngineConfig
from previews.lifecycle import StopOutcome
from previews.models import Preview, PreviewState, StopReason
from previews.reach import EnginesDirect
from previews.reconcile import (
    EngineListing,
    engines_list,
    preview_reconcile,
    previews_reconcile,
)
from previews.services import (
    container_name,
    preview_open,
    preview_status,
    preview_stop,
)
from tests.builders import chat_session_create, user_create

pytestmark = pytest.mark.django_db


def _containers(docker_client, session):
    label = f"kosuke.session_pk={session.pk}"
    return docker_client.containers.list(all=True, filters={"label": label})


@pytest.fixture
def session(db):
    return chat_session_create(user_create("alice"), last_activity_at=timezone.now() - td(hours=1))


def test_opening_creates_one_labelled_running_container(previews_on_docker, session, settings):
    preview = preview_open(session=session)

    [container] = _containers(previews_on_docker, session)
    assert container.status == "running"
    assert container.name == container_name(session)
    assert container.labels == {
        "kosuke.type": "preview",
        "kosuke.session_pk": str(session.pk),
        "kosuke.project_id": "proj-1",
        "kosuke.session_id": "sess-1",
        "kosuke.managed_by": settings.PREVIEW_MANAGED_BY,
        "kosuke.engine": "local",
    }
    assert container.attrs["HostConfig"]["Memory"] == settings.PREVIEW_MEMORY_MB * 1024 * 1024
    preview.refresh_from_db()
    assert preview.state == PreviewState.RUNNING
    assert preview.engine == "local"


def test_an_engine_s_labels_and_network_mode_go_on_its_containers(
    previews_on_docker, session, settings
):
    url = engine().url
    settings.PREVIEW_ENGINES = f"edge={url}?network=none&label=zone:b&label=tier:free"
    engine_at.cache_clear()

    preview = preview_open(session=session)

    [container] = _containers(previews_on_docker, session)
    assert container.status == "running"
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    labels = container.labels
    assert (labels["zone"], labels["tier"], labels["kosuke.engine"]) == ("b", "free", "edge")
    assert preview.engine == "edge"


def test_opening_counts_as_activity(previews_on_docker, session):
    before = timezone.now()

    preview_open(session=session)

    session.refresh_from_db()
    assert session.last_activity_at >= before


def test_reopening_a_stopped_preview_starts_the_same_container(previews_on_docker, session):
    preview_open(session=session)
    [first] = _containers(previews_on_docker, session)
    preview_stop(session=session, reason=StopReason.INACTIVE, detail="stopped after 30 min")

    preview_open(session=session)

    [again] = _containers(previews_on_docker, session)
    assert again.id == first.id and again.status == "running"
    assert Preview.objects.get().state == PreviewState.RUNNING


def test_stopping_stops_the_containers_and_records_why(previews_on_docker, session):
    preview_open(session=session)
    now = timezone.now()

    outcome = preview_stop(
        session=session,
        reason=StopReason.INACTIVE,
        detail="stopped after 30 min without activity",
        now=now,
    )

    assert outcome == StopOutcome.STOPPED
    [container] = _containers(previews_on_docker, session)
    assert container.status == "exited"
    preview = Preview.objects.get()
    assert (preview.state, preview.last_stop_reason) == ("stopped", "inactive")
    assert now <= preview.stopped_at <= timezone.now()  # when the engine confirmed it
    assert (
        preview.last_stop_message() == f"stopped after 30 min without activity at {now:%H:%M} UTC"
    )


def test_stopping_twice_is_harmless(previews_on_docker, session):
    preview_open(session=session)
    preview_stop(session=session, reason=StopReason.MANUAL)

    assert preview_stop(session=session, reason=StopReason.MANUAL) == StopOutcome.ALREADY_STOPPED
    assert Preview.objects.get().state == PreviewState.STOPPED


def test_stopping_a_preview_that_never_ran_is_harmless(previews_on_docker, session):
    assert preview_stop(session=session, reason=StopReason.INACTIVE) == StopOutcome.ALREADY_STOPPED


def test_a_container_removed_behind_our_back_counts_as_stopped(previews_on_docker, session):
    preview_open(session=session)
    for container in _containers(previews_on_docker, session):
        container.remove(force=True)

    assert preview_stop(session=session, reason=StopReason.INACTIVE) == StopOutcome.STOPPED
    assert Preview.objects.get().state == PreviewState.STOPPED


def test_automatic_stops_leave_kept_containers_running(previews_on_docker, session, preview_image):
    preview_open(session=session)
    [container] = _containers(previews_on_docker, session)
    container.remove(force=True)
    kept = previews_on_docker.containers.run(
        preview_image, detach=True, labels={**container.labels, "kosuke.keep": "true"}
    )

    outcome = preview_stop(session=session, reason=StopReason.INACTIVE)

    kept.reload()
    assert outcome == StopOutcome.KEPT
    assert kept.status == "running"
    assert Preview.objects.get().state == PreviewState.RUNNING


def test_a_manual_stop_also_stops_kept_containers(previews_on_docker, session, preview_image):
    preview_open(session=session)
    [container] = _containers(previews_on_docker, session)
    container.remove(force=True)
    kept = previews_on_docker.containers.run(
        preview_image, detach=True, labels={**container.labels, "kosuke.keep": "true"}
    )

    assert preview_stop(session=session, reason=StopReason.MANUAL) == StopOutcome.STOPPED
    kept.reload()
    assert kept.status == "exited"


def test_status_never_says_stopped_while_a_container_runs(previews_on_docker, session):
    preview_open(session=session)
    preview_stop(session=session, reason=StopReason.MANUAL)
    [container] = _containers(previews_on_docker, session)
    container.start()  # someone starts it behind our back

    status = preview_status(session=session)

    assert status.preview.state == PreviewState.RUNNING
    assert [c.state for c in status.containers] == ["running"]
    assert Preview.objects.get().state == PreviewState.RUNNING


def test_a_container_that_exited_on_its_own_marks_the_preview_stopped(previews_on_docker, session):
    preview_open(session=session)
    [container] = _containers(previews_on_docker, session)
    container.kill()

    status = preview_status(session=session)

    assert status.preview.state == PreviewState.STOPPED
    assert status.preview.last_stop_reason == StopReason.EXITED


def test_an_interrupted_stop_is_settled_by_the_engine(previews_on_docker, session):
    preview_open(session=session)
    [container] = _containers(previews_on_docker, session)
    container.stop(timeout=1)
    # A worker died between claiming the stop and recording it.
    Preview.objects.update(
        state=PreviewState.STOPPING, state_changed_at=timezone.now() - td(minutes=6)
    )

    assert preview_status(session=session).preview.state == PreviewState.STOPPED


def test_a_missing_image_fails_the_start_with_a_permanent_error(
    previews_on_docker, session, settings
):
    settings.PREVIEW_IMAGE = "kosuke-no-such-image:latest"

    with pytest.raises(EngineError) as failure:
        preview_open(session=session)

    assert failure.value.permanent
    assert "kosuke-no-such-image" in str(failure.value)
    preview = Preview.objects.get()
    assert (preview.state, preview.last_stop_reason) == ("failed", "failed_start")
    assert "kosuke-no-such-image" in preview.last_error


def test_an_unreachable_engine_says_where_it_looked(tmp_path):
    missing = f"unix://{tmp_path}/docker.sock"

    config = EngineConfig("gone", missing, capacity=1)
    with pytest.raises(
        EngineError, match=f"Docker engine gone unreachable at {missing}"
    ) as failure:
        Engine(config).containers({"kosuke.type": "preview"})

    assert not failure.value.permanent


@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_create_one_container(previews_on_docker):
    session = chat_session_create(user_create("alice"))
    barrier = threading.Barrier(4)
    errors = []

    def open_preview():
        try:
            barrier.wait()
            preview_open(session=type(session).objects.get(pk=session.pk))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=open_preview) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(_containers(previews_on_docker, session)) == 1
    assert preview_status(session=session).preview.state == PreviewState.RUNNING


def test_a_stale_reading_never_overrides_a_newer_state(previews_on_docker, session):
    preview_open(session=session)
    read_before = Preview.objects.get()
    # An open or stop changes the row after our read, before our engine listing lands.
    Preview.objects.update(state_changed_at=timezone.now() + td(seconds=1))

    preview_reconcile(read_before, containers=[])

    assert Preview.objects.get().state == PreviewState.RUNNING


def test_opening_while_a_stop_is_under_way_is_refused(previews_on_docker, session):
    preview_open(session=session)
    Preview.objects.update(state=PreviewState.STOPPING)

    with pytest.raises(ApplicationError, match="stopping right now") as refusal:
        preview_open(session=session)

    assert refusal.value.status == 409


def test_a_stop_while_starting_reports_busy(previews_on_docker, session):
    preview_open(session=session)
    Preview.objects.update(state=PreviewState.STARTING)

    assert preview_stop(session=session, reason=StopReason.MANUAL) == StopOutcome.BUSY
    assert Preview.objects.get().state == PreviewState.STARTING


def test_a_foreign_container_with_our_name_is_not_adopted(
    previews_on_docker, session, preview_image
):
    foreign = previews_on_docker.containers.create(
        preview_image, name=container_name(session), labels={"owner": "someone else"}
    )

    try:
        with pytest.raises(EngineError, match="is taken by another container") as failure:
            preview_open(session=session)
    finally:
        foreign.remove(force=True)  # not ours: the fixture would not remove it

    assert failure.value.permanent
    assert Preview.objects.get().state == PreviewState.FAILED


def test_reconciling_many_rows_writes_each_kind_of_change_once(previews_on_docker):
    owner = user_create("bulk")
    sessions = [chat_session_create(owner, session_id=f"s{n}") for n in range(5)]
    for session in sessions:
        Preview.objects.create(session=session, state=PreviewState.RUNNING, engine="local")
    Preview.objects.filter(session=sessions[0]).update(state=PreviewState.FAILED)
    previews = list(Preview.objects.select_related("session").order_by("pk"))
    listing = EngineListing(containers={})  # none of them has a container any more

    with CaptureQueriesContext(connection) as queries:
        changed = previews_reconcile(previews, listing, now=timezone.now())

    assert changed == 5
    assert len(queries) == 2  # running -> stopped (exited), failed -> stopped
    stopped = Preview.objects.filter(state=PreviewState.STOPPED)
    assert stopped.filter(last_stop_reason=StopReason.EXITED).count() == 4
    assert [preview.state for preview in previews] == ["stopped"] * 5


def test_reconciling_writes_nothing_when_the_rows_agree(previews_on_docker, session):
    preview = preview_open(session=session)
    containers = engine().containers({"kosuke.session_pk": str(session.pk)})

    with CaptureQueriesContext(connection) as queries:
        preview_reconcile(preview, containers)

    assert len(queries) == 0


@pytest.mark.django_db(transaction=True)
def test_a_claim_waiting_on_a_concurrent_change_backs_off(previews_on_docker):
    from django.db import transaction

    from previews.lifecycle import preview_claim_stop

    session = chat_session_create(user_create("alice"))
    preview_open(session=session)
    as_read = Preview.objects.select_related("session").get()
    changed, committed = threading.Event(), threading.Event()

    def open_meanwhile():
        try:
            with transaction.atomic():  # an open moves it on and holds the row a moment
                Preview.objects.filter(pk=as_read.pk).update(
                    state=PreviewState.STARTING, state_changed_at=timezone.now()
                )
                changed.set()
                committed.wait(0.5)
        finally:
            connection.close()

    opener = threading.Thread(target=open_meanwhile)
    opener.start()
    assert changed.wait(10)
    claimed = preview_claim_stop(
        as_read, token="decision:1", now=timezone.now(), unchanged_since_read=True
    )
    opener.join(10)

    assert not claimed
    assert Preview.objects.get().state == PreviewState.STARTING


def test_a_failed_preview_found_running_again_forgets_its_old_error(previews_on_docker, session):
    preview = preview_open(session=session)
    Preview.objects.filter(pk=preview.pk).update(
        state=PreviewState.FAILED, last_error="engine unreachable at 14:02"
    )
    preview.refresh_from_db()
    listing = engines_list([preview.engine], EnginesDirect())

    previews_reconcile([preview], listing, now=timezone.now())

    preview.refresh_from_db()
    assert (preview.state, preview.last_error) == (PreviewState.RUNNING, "")
