"""After the stop: containers of previews stopped for longer than the retention are
removed with their volumes, and orphans once they are old enough; each is a decision."""

from __future__ import annotations

from datetime import timedelta as td

import docker.errors
import pytest
from django.utils import timezone

from cleanup.models import CleanupRun, StopDecision
from cleanup.stops import stop_inline
from cleanup.sweep import sweep
from previews.engine import engine, preview_labels
from previews.lifecycle import preview_containers_remove
from previews.models import Preview, PreviewState
from previews.reach import EnginesThroughWorkers
from previews.services import preview_open
from tests.builders import chat_session_create, session_with_running_preview
from tests.engines import engines_configure
from tests.preview_image import preview_image_build

pytestmark = pytest.mark.django_db


def _sweep() -> CleanupRun:
    return sweep(trigger=CleanupRun.Trigger.BEAT, dispatch=stop_inline)


def _containers(docker_client, session_pk: int) -> list:
    label = f"kosuke.session_pk={session_pk}"
    return docker_client.containers.list(all=True, filters={"label": label})


def test_a_preview_stopped_longer_than_the_retention_is_removed_and_reopens_fresh(
    previews_on_docker, alice, settings
):
    settings.PREVIEW_IMAGE = preview_image_build(
        previews_on_docker, tag="kosuke-preview-volume:latest", volumes=["/data"]
    )
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    _sweep()  # stops it
    (container,) = _containers(previews_on_docker, session.pk)
    (volume,) = [mount["Name"] for mount in container.attrs["Mounts"]]
    assert Preview.objects.get(session=session).state == PreviewState.STOPPED

    _sweep()  # stopped a moment ago: well within the 24 h retention
    assert [c.id for c in _containers(previews_on_docker, session.pk)] == [container.id]

    Preview.objects.filter(session=session).update(stopped_at=timezone.now() - td(hours=25))
    run = _sweep()

    assert _containers(previews_on_docker, session.pk) == []
    with pytest.raises(docker.errors.NotFound):
        previews_on_docker.volumes.get(volume)
    removal = StopDecision.objects.get(stop_reason="retention")
    assert (removal.outcome, removal.outcome_detail) == ("stopped", "removed")
    assert removal.run_id == run.pk
    assert removal.reason == "stopped 25 h ago, longer than the retention (24 h)"
    preview = Preview.objects.get(session=session)
    assert (preview.state, preview.last_stop_reason) == ("stopped", "inactive")  # its stop
    assert preview.engine == ""  # no engine holds it now: its next open is placed afresh

    preview_open(session=session)
    (fresh,) = _containers(previews_on_docker, session.pk)
    assert fresh.id != container.id and fresh.status == "running"


def test_retention_zero_keeps_stopped_containers(previews_on_docker, alice, settings):
    settings.PREVIEW_RETENTION_HOURS = 0
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    _sweep()
    Preview.objects.filter(session=session).update(stopped_at=timezone.now() - td(days=30))

    _sweep()

    assert len(_containers(previews_on_docker, session.pk)) == 1
    assert not StopDecision.objects.filter(stop_reason="retention").exists()


def test_an_orphan_is_removed_only_once_older_than_the_minimum_age(
    previews_on_docker, alice, settings
):
    session = chat_session_create(alice, session_id="gone")
    labels = preview_labels(session_pk=session.pk, project_id="proj-1", session_id="gone")
    engine().create(name=f"kosuke-orphan-{session.pk}", labels=labels, environment={})
    session_pk = session.pk
    session.delete()  # as if its open were still being recorded, or it went meanwhile

    _sweep()
    assert len(_containers(previews_on_docker, session_pk)) == 1  # too young to be an orphan
    assert not StopDecision.objects.exists()

    settings.ORPHAN_MIN_AGE_MINUTES = 0
    _sweep()
    assert _containers(previews_on_docker, session_pk) == []
    orphan = StopDecision.objects.get()
    assert (orphan.stop_reason, orphan.outcome) == ("orphan", "stopped")


def test_a_preview_reopened_since_it_was_read_keeps_its_containers(previews_on_docker, alice):
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    _sweep()
    as_read = Preview.objects.get(session=session)
    preview_open(session=session)  # reopened before its removal came
    (container,) = _containers(previews_on_docker, session.pk)

    assert preview_containers_remove(as_read, [container.id], now=timezone.now()) is False

    container.reload()
    assert container.status == "running"
    assert Preview.objects.get(session=session).state == PreviewState.RUNNING


def test_a_container_left_behind_when_its_preview_moved_engines_is_an_orphan(
    previews_on_docker, alice, settings
):
    settings.ORPHAN_MIN_AGE_MINUTES = 0
    # The real engine under a second name: what `local` made, `also` lists too, and keeps.
    engines_configure(settings, also=engine().url)
    moved = session_with_running_preview(alice, session_id="moved", idle_for=td(minutes=1))
    stays = session_with_running_preview(alice, session_id="stays", idle_for=td(minutes=1))
    # Its engine was taken out meanwhile, and it was placed afresh on another.
    Preview.objects.filter(session=moved).update(engine="elsewhere")

    _sweep()

    assert _containers(previews_on_docker, moved.pk) == []
    (orphan,) = StopDecision.objects.filter(stop_reason="orphan")
    assert (orphan.session_id, orphan.outcome) == ("moved", "stopped")
    assert "belongs to no preview" in orphan.reason
    assert [c.status for c in _containers(previews_on_docker, stays.pk)] == ["running"]


def test_removals_go_through_the_engine_s_workers(worker, alice, settings):
    settings.ORPHAN_MIN_AGE_MINUTES = 0
    session = session_with_running_preview(alice, session_id="s", idle_for=td(hours=2))
    _sweep()  # stops it
    Preview.objects.filter(session=session).update(stopped_at=timezone.now() - td(hours=25))
    gone = chat_session_create(alice, session_id="gone")
    labels = preview_labels(session_pk=gone.pk, project_id="proj-1", session_id="gone")
    engine().create(name=f"kosuke-orphan-{gone.pk}", labels=labels, environment={})
    gone_pk = gone.pk
    gone.delete()

    # As the sweeps worker does: it reaches no engine; the worker serving engine.local lists
    # it and removes what the sweep decided, each reply awaited.
    run = sweep(
        trigger=CleanupRun.Trigger.BEAT, dispatch=stop_inline, reach=EnginesThroughWorkers()
    )

    removals = {d.stop_reason: (d.outcome, d.outcome_detail) for d in run.decisions.all()}
    assert removals == {"orphan": ("stopped", "removed"), "retention": ("stopped", "removed")}
    assert _containers(engine().client, session.pk) == []
    assert _containers(engine().client, gone_pk) == []
    assert Preview.objects.get(session=session).engine == ""
