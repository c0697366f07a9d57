"""The dashboard's live feed under fan-out: many open streams, one sweep of many stops.

Opens `--streams` Server-Sent Events streams (/ops/events, as staff) to the web process
served as compose serves it (uvicorn, one process), sweeps `--decisions` idle previews
(stopped in this process, eight at a time, as a worker would), and prints how long the
sweep took to settle its last stop, how long after that every stream had seen it, that
every stream saw every decision once, and the web process's memory and threads before
and after.

Run: LOG_LEVEL=WARNING uv run python bench/sse_fanout.py [--streams 200] [--decisions 1000]
Starts a throwaway PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set). The
containers are simulated by bench/fake_engine.py (a small Docker API on a Unix socket);
the feed, Redis, PostgreSQL and the stops are real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

from harness import django_ready, fake_engine_use, live_previews_add, web_start


@dataclass
class StreamSeen:
    decisions: set[int] = field(default_factory=set)
    events: int = 0
    finished_at: float | None = None  # when it saw the run's "finished"


async def _follow(port: int, cookie: str, run_started: threading.Event, seen: StreamSeen,
                  connected: asyncio.Event, everyone: list) -> None:  # fmt: skip
    # A swept event lists every decision: one long line.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    writer.write(
        f"GET /ops/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise SystemExit(f"a stream was refused: {status.decode().strip()}")
    everyone.append(seen)
    connected.set()
    async for line in reader:
        if not line.startswith(b"data: "):
            continue
        event = json.loads(line[6:])
        seen.events += 1
        if event.get("phase") == "stopping":
            seen.decisions.add(event["decision"])
        elif event.get("phase") == "finished" and "examined" not in event:
            seen.finished_at = time.perf_counter()
            break
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200, help="open streams")
    parser.add_argument("--decisions", type=int, default=1000, help="idle previews swept")
    args = parser.parse_args()

    django_ready(redis=True)
    import psutil
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from chat.models import ChatSession
    from cleanup.models import CleanupRun
    from cleanup.progress import CHANNEL
    from cleanup.stops import stop_inline
    from cleanup.sweep import sweep
    from kosuke import embedded
    from kosuke.redis_client import redis_client

    fake = fake_engine_use()
    owner = User.objects.create_user("bench")
    live_previews_add(fake, owner.pk, 0, args.decisions)
    ChatSession.objects.update(
        last_activity_at=ChatSession.objects.first().created_at.replace(year=2020)
    )
    operator = Client()
    operator.force_login(User.objects.create_user("operator", is_staff=True))
    cookie = (
        f"{settings.SESSION_COOKIE_NAME}={operator.cookies[settings.SESSION_COOKIE_NAME].value}"
    )

    port = embedded.free_port()
    web = web_start(
        port, LIVE_STREAMS_PER_USER=str(args.streams), LIVE_STREAMS_MAX=str(args.streams)
    )
    process = psutil.Process(web.pid)
    before = (process.memory_info().rss, process.num_threads())
    print(
        f"{args.streams} streams, one sweep of {args.decisions} idle previews; containers "
        "simulated by a fake Docker API on a Unix socket (bench/fake_engine.py)"
    )

    seen: list[StreamSeen] = []
    loop = asyncio.new_event_loop()
    all_connected = threading.Event()
    run_started = threading.Event()

    async def follow_all() -> list:
        events = [asyncio.Event() for _ in range(args.streams)]
        tasks = [
            asyncio.create_task(_follow(port, cookie, run_started, StreamSeen(), ev, seen))
            for ev in events
        ]
        await asyncio.gather(*(ev.wait() for ev in events))
        all_connected.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)

    follower = threading.Thread(target=lambda: loop.run_until_complete(follow_all()))
    follower.start()
    try:
        if not all_connected.wait(60):
            raise SystemExit("the streams did not all connect within 60 s")
        while redis_client().pubsub_numsub(CHANNEL)[0][1] < args.streams:
            time.sleep(0.05)
        connected = (process.memory_info().rss, process.num_threads())

        started = time.perf_counter()
        run = sweep(trigger=CleanupRun.Trigger.COMMAND, dispatch=stop_inline,
                    batch_size=args.decisions, concurrency=8)  # fmt: skip
        settled = time.perf_counter()
        follower.join(120)
        if follower.is_alive():
            raise SystemExit("some streams never saw the run finish within 120 s")
        after = (process.memory_info().rss, process.num_threads())
    finally:
        web.kill()  # open streams would hold a graceful shutdown
        web.wait(30)
        fake.close()

    run = CleanupRun.objects.with_counts().get(pk=run.pk)
    lags = sorted((s.finished_at - settled) * 1000 for s in seen)
    complete = sum(1 for s in seen if len(s.decisions) == run.stopped + run.skipped + run.failed)
    mib = 2**20
    print(
        f"sweep: {run.examined} examined, {run.stopped} stopped, {run.failed} failed; "
        f"{settled - started:.2f} s from the sweep's start to its last stop settled"
    )
    print(
        f"every stream saw the last decision {lags[-1]:.0f} ms after it settled "
        f"(median {statistics.median(lags):.0f} ms); {complete}/{len(seen)} streams saw "
        f"every decision, {seen[0].events} events each"
    )
    print(
        f"web process: {before[0] / mib:.1f} MiB and {before[1]} threads before, "
        f"{connected[0] / mib:.1f} MiB and {connected[1]} threads with {args.streams} streams "
        f"open, {after[0] / mib:.1f} MiB and {after[1]} threads after the sweep"
    )


if __name__ == "__main__":
    main()
