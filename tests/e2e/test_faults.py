"""The fault suite, short form: real processes, real faults, and what each one cost.

Every scenario opens previews through the API, makes them idle, breaks something while
the system stops them, mends it, and measures: stops tried, lost (not stopped by the
deadline), duplicated (a preview stopped by two decisions), responses 5xx other than 503
while it was broken, and the time to converge after the fault ended. The table is
printed at the end of the run (tests/e2e/conftest.py). Intervals are shortened: a sweep
every 2 s, 2 s stop timeouts, an 8 s visibility timeout.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter

import psutil
import pytest

from tests.e2e.conftest import FaultResult
from tests.e2e.stack import Stack
from tests.polling import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# After the fault ends, everything is stopped within two sweeps and one stop.
BOUND = 2 * Stack.INTERVAL_SECONDS + Stack.STOP_TIMEOUT_SECONDS
# A dead worker's stops come back after the visibility timeout, then the same bound.
WORKER_LOST_BOUND = Stack.VISIBILITY_SECONDS + BOUND + 2  # + kombu's restore interval
# A killed pool process: its task is requeued at once, after the pool has started a new
# process (about a second, more on a loaded machine).
POOL_PROCESS_LOST_BOUND = BOUND + 2


class Probe:
    """Calls the API every 0.1 s while a fault lasts; counts answers by status."""

    def __init__(self, stack: Stack, path: str, method: str = "POST", body: dict | None = None):
        self.statuses: Counter = Counter()
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    status, _ = stack.request(method, path, body)
                except OSError:
                    status = 0  # the web process did not answer at all
                self.statuses[status] += 1
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> Counter:
        self._stop.set()
        self._thread.join(30)
        return self.statuses

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)


def _converged(stack: Stack, project: str, count: int, fault_ended: float, deadline: float):
    """Wait until every preview of `project` is stopped; returns (stopped once, duplicated,
    seconds after the fault ended)."""
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: (
                stack.preview_states(project)["stopped"] == count
                and not any(outcome == "pending" for _, outcome, _ in stack.outcomes(project))
            ),
            timeout=deadline,
            what=f"every preview of {project} to stop",
            every=0.2,
        )
    converged_after = time.monotonic() - fault_ended
    stopped = Counter(
        session for session, outcome, _ in stack.outcomes(project) if outcome == "stopped"
    )
    once = sum(1 for n in stopped.values() if n == 1)
    duplicated = sum(1 for n in stopped.values() if n > 1)
    return once, duplicated, converged_after


def _record(results, name, stack, project, count, fault_ended, *, probe=None, bound=BOUND):
    once, duplicated, took = _converged(stack, project, count, fault_ended, deadline=60)
    lost = count - once - duplicated
    result = FaultResult(
        name,
        count,
        lost,
        duplicated,
        probe.server_errors if probe else 0,
        took,
        bound,
        dict(probe.statuses) if probe else {},
    )
    results.append(result)
    assert (lost, duplicated) == (0, 0), (result, stack.outcomes(project))
    assert result.server_errors == 0, result
    assert took <= bound, result
    return result


def _wait_stopping(stack: Stack, project: str) -> None:
    wait_for(
        lambda: stack.preview_states(project)["stopping"] > 0,
        timeout=30,
        what="a stop to begin",
        every=0.05,
    )


def test_a_worker_killed_mid_stop(stack, fault_results):
    pks = stack.previews_open("kill-worker", 4)
    stack.make_idle("kill-worker")
    _wait_stopping(stack, "kill-worker")

    stack.kill("worker")  # SIGKILL: no warm shutdown, nothing acknowledged
    stack.worker()
    stack.worker_ready()
    fault_ended = time.monotonic()

    _record(
        fault_results,
        "worker SIGKILL mid-stop",
        stack,
        "kill-worker",
        len(pks),
        fault_ended,
        bound=WORKER_LOST_BOUND,
    )


def test_a_pool_process_killed_mid_stop(stack, fault_results):
    pks = stack.previews_open("kill-child", 4)
    stack.make_idle("kill-child")
    _wait_stopping(stack, "kill-child")

    worker = psutil.Process(stack.processes["worker"].pid)
    worker.children(recursive=True)[0].kill()
    fault_ended = time.monotonic()

    _record(
        fault_results,
        "pool process SIGKILL",
        stack,
        "kill-child",
        len(pks),
        fault_ended,
        bound=POOL_PROCESS_LOST_BOUND,
    )


def test_two_beats(stack, fault_results):
    stack.beat("beat-2")
    try:
        pks = stack.previews_open("two-beats", 4)
        started = time.monotonic()
        stack.make_idle("two-beats")

        _record(fault_results, "two beats", stack, "two-beats", len(pks), started)
    finally:
        stack.kill("beat-2")


def test_postgres_down_longer_than_the_retry_budget(stack, fault_results):
    pks = stack.previews_open("pg-down", 4)
    stack.make_idle("pg-down")
    _wait_stopping(stack, "pg-down")

    stack.postgres_down()
    try:
        probe = Probe(
            stack, "/api/projects/pg-down/chat-sessions/s0/heartbeat", body={"client_id": "t"}
        )
        time.sleep(12)  # longer than a stop's three retries
        probe.stop()
    finally:
        stack.postgres_up()
    fault_ended = time.monotonic()

    result = _record(
        fault_results, "PostgreSQL down 12 s", stack, "pg-down", len(pks), fault_ended, probe=probe
    )
    assert result.statuses.get(503, 0) > 0
    assert not any("lost" in detail for _, _, detail in stack.outcomes("pg-down"))


def test_redis_restarted_without_persistence_with_stops_queued(stack, fault_results):
    pks = stack.previews_open("redis-restart", 4)
    stack.kill("worker")
    stack.worker("sweeper")
    stack.worker_ready("sweeper")
    # It takes no more stops, yet sweeps: its pool processes still list the engine
    # themselves (they serve engine.local, as the worker did when it started them).
    stack.consumer_cancel("sweeper", "engine.local")
    stack.make_idle("redis-restart")
    wait_for(
        lambda: stack.queued_tasks("engine.local")["cleanup.stop_preview"] == len(pks),
        timeout=30,
        what="the stops to be handed out and wait in engine.local",
    )
    assert {outcome for _, outcome, _ in stack.outcomes("redis-restart")} == {"pending"}
    assert stack.preview_states("redis-restart") == {"running": len(pks)}  # none begun

    stack.kill("sweeper")
    stack.redis_restart()  # the queued stops are gone with it
    stack.worker()
    stack.worker_ready()
    fault_ended = time.monotonic()

    _record(
        fault_results, "Redis restart, stops queued", stack, "redis-restart", len(pks), fault_ended
    )


def test_a_worker_killed_mid_sweep(stack, fault_results):
    pks = stack.previews_open("kill-sweep", 2)
    [(began,)] = stack.sql("SELECT now()")
    held = stack.proxy.held  # requests held by the scenarios before this one
    stack.proxy.hold(b"/containers/json")  # the sweep waits in its engine listing
    stack.make_idle("kill-sweep")
    wait_for(lambda: stack.proxy.held > held, timeout=30, what="a sweep to list the engine")

    stack.kill("worker")  # while it holds the sweep lock
    stack.proxy.hold_no_more()
    stack.worker()
    stack.worker_ready()
    fault_ended = time.monotonic()

    _record(fault_results, "worker SIGKILL mid-sweep", stack, "kill-sweep", len(pks), fault_ended)
    # The killed sweep's run is left unswept; the next sweep past the sweep time limit
    # (330 s) closes it with the reason (tests/cleanup/test_recovery.py holds that).
    unswept = stack.sql(
        "SELECT count(*) FROM cleanup_cleanuprun WHERE swept_at IS NULL AND started_at > %s",
        (began,),
    )
    assert unswept[0][0] >= 1


def test_the_engine_down(stack, fault_results):
    pks = stack.previews_open("engine-down", 4)
    probe = Probe(stack, "/api/projects/engine-down/chat-sessions/s0/preview", method="GET")
    stack.proxy.fail(b"/", times=10**9)  # every connection to the engine is cut
    stack.make_idle("engine-down")
    time.sleep(10)
    stack.proxy.fail(b"/", times=0)
    probe.stop()
    fault_ended = time.monotonic()

    _record(
        fault_results, "engine down 10 s", stack, "engine-down", len(pks), fault_ended, probe=probe
    )


def test_the_engine_hung(stack, fault_results):
    pks = stack.previews_open("engine-hung", 4)
    stack.proxy.hold(b"/")  # every request waits, as on a SIGSTOPped engine
    stack.make_idle("engine-hung")
    time.sleep(10)
    stack.proxy.hold_no_more()
    fault_ended = time.monotonic()

    _record(fault_results, "engine hung 10 s", stack, "engine-hung", len(pks), fault_ended)


def test_a_container_started_behind_the_systems_back(stack, fault_results, docker_client):
    pks = stack.previews_open("behind-back", 1)
    stack.make_idle("behind-back")
    wait_for(
        lambda: stack.preview_states("behind-back")["stopped"] == 1,
        timeout=30,
        what="the idle preview to stop",
    )

    labels = [f"kosuke.session_pk={pks[0]}", f"kosuke.managed_by={stack.managed_by}"]
    [container] = docker_client.containers.list(all=True, filters={"label": labels})
    stopped_before = [o for _, o, _ in stack.outcomes("behind-back")].count("stopped")
    container.start()  # docker start, outside the system
    started = time.monotonic()
    # Adopted and, idle for hours, stopped again in the same sweep.
    stopped_again = lambda: [o for _, o, _ in stack.outcomes("behind-back")].count("stopped")  # noqa: E731
    wait_for(lambda: stopped_again() > stopped_before, timeout=30, what="the sweep to stop it")
    took = time.monotonic() - started
    container.reload()
    adopted = stack.sql(
        "SELECT start_detail, state FROM previews_preview WHERE session_id = %s", (pks[0],)
    )
    result = FaultResult(
        "container started behind our back",
        1,
        0 if container.status == "exited" else 1,
        stopped_again() - stopped_before - 1,
        0,
        took,
        BOUND,
        {},
    )
    fault_results.append(result)
    assert adopted == [("found running: started outside the system", "stopped")]
    assert (result.lost, result.duplicated) == (0, 0) and took <= result.bound, result


def test_a_message_while_the_stop_is_under_way(stack, fault_results, docker_client):
    pks = stack.previews_open("message-mid-stop", 1)
    held = stack.proxy.held  # requests held by the scenarios before this one
    stack.proxy.hold(b"/stop")  # the engine takes its time with the stop
    try:
        stack.make_idle("message-mid-stop")
        _wait_stopping(stack, "message-mid-stop")
        wait_for(lambda: stack.proxy.held > held, timeout=30, what="the stop at the engine")
        status, _ = stack.request(
            "POST", "/api/projects/message-mid-stop/chat-sessions/s0", {"content": "wait!"}
        )
        spoke = time.monotonic()
    finally:
        stack.proxy.hold_no_more()
    assert status == 201

    wait_for(
        lambda: stack.preview_states("message-mid-stop")["running"] == 1,
        timeout=30,
        what="the preview to start again",
        every=0.1,
    )
    took = time.monotonic() - spoke
    labels = [f"kosuke.session_pk={pks[0]}", f"kosuke.managed_by={stack.managed_by}"]
    [container] = docker_client.containers.list(all=True, filters={"label": labels})
    [(_, outcome, detail)] = stack.outcomes("message-mid-stop")
    result = FaultResult("message during a stop", 1, 0, 0, 0, took, BOUND, {201: 1})
    fault_results.append(result)
    # The user who spoke gets the preview back: stopped, then started again.
    assert (outcome, container.status) == ("skipped", "running"), detail
    assert detail.startswith("stopped, then started again") and took <= BOUND, result


def test_messages_racing_the_sweeps(stack, fault_results, docker_client):
    pks = stack.previews_open("racing", 4)
    statuses: Counter = Counter()
    stack.make_idle("racing")
    idle_since = time.monotonic()
    # Each user speaks at another moment of the next 2 s, while sweeps decide and stops
    # run. A stop takes the 2 s stop timeout, so every message lands before any stop could
    # have finished: whatever was decided, every preview must end up running.
    for n in range(len(pks)):
        time.sleep(max(0.0, idle_since + 0.3 + 0.5 * n - time.monotonic()))
        status, _ = stack.request(
            "POST", f"/api/projects/racing/chat-sessions/s{n}", {"content": "more"}
        )
        statuses[status] += 1
    spoke = time.monotonic()

    wait_for(
        lambda: (
            stack.preview_states("racing")["running"] == len(pks)
            and not any(outcome == "pending" for _, outcome, _ in stack.outcomes("racing"))
        ),
        timeout=30,
        what="every stop decided during the race to settle",
        every=0.2,
    )
    took = time.monotonic() - spoke
    labels = ["kosuke.project_id=racing", f"kosuke.managed_by={stack.managed_by}"]
    running = [c.status for c in docker_client.containers.list(all=True, filters={"label": labels})]
    raced = [detail for _, _, detail in stack.outcomes("racing")]
    result = FaultResult(
        f"messages racing sweeps ({len(raced)} raced)",
        len(pks),
        running.count("exited"),
        0,
        0,
        took,
        BOUND,
        dict(statuses),
    )
    fault_results.append(result)
    # Not stopped after all, or stopped and started again: never left stopped.
    assert set(statuses) == {201} and running == ["running"] * len(pks), (running, raced)
