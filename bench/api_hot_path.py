"""The API's hot path under load: heartbeats and messages against the web process served
as compose serves it (uvicorn, the Dockerfile's command), driven by wrk on 127.0.0.1.

Prints requests/s, p50 and p99 at each connection count, and per request: the SQL
queries (counted by Django on one request), and the commits and new connections
PostgreSQL counted during the run (pg_stat_database: xact_commit, sessions; a statement
outside a transaction counts as one commit).

Run: LOG_LEVEL=WARNING uv run python bench/api_hot_path.py [--duration 10]
     [--connections 8 32] [--workers 1]
Needs `wrk` (apt-get install wrk). Starts a throwaway PostgreSQL and Redis (unless
DATABASE_URL / REDIS_URL are set).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import django_ready, web_start

# Seconds of load on each route before its measured runs, not counted.
WARM_UP_SECONDS = 2
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""


def _wrk(url: str, script: Path, connections: int, duration: int) -> dict:
    threads = min(connections, 2)
    result = subprocess.run(  # noqa: S603 - wrk from PATH, fixed arguments
        [  # noqa: S607
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            script,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out)[1]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(errors[1]) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")

    django_ready(redis=True)
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from chat.models import ChatSession
    from chat.tokens import api_token_create
    from kosuke import embedded

    user = User.objects.create_user("bench")
    _token, raw_token = api_token_create(user=user)
    ChatSession.objects.create(owner=user, project_id="bench", session_id="s1")
    base = "/api/projects/bench/chat-sessions/s1"
    routes = {
        "heartbeat": (f"{base}/heartbeat", {"client_id": "tab-1"}),
        "message": (base, {"content": "one more change, please"}),
    }

    # Queries per request in steady state, counted by Django on one request of each (after
    # two: the token, the session and the heartbeat's stop inputs are then known).
    client = Client(headers={"Authorization": f"Bearer {raw_token}"}, HTTP_HOST="127.0.0.1")
    queries = {}
    for name, (path, body) in routes.items():
        for _ in range(2):
            client.post(path, body, content_type="application/json", secure=True)
        with CaptureQueriesContext(connection) as captured:
            response = client.post(path, body, content_type="application/json", secure=True)
        if response.status_code not in (200, 201):
            raise SystemExit(f"{name}: {response.status_code} {response.content[:200]!r}")
        queries[name] = len(captured)
    connection.close()

    port = embedded.free_port()
    web = web_start(port, workers=args.workers)
    scripts = Path(tempfile.mkdtemp(prefix="kosuke-wrk-"))
    print(f"uvicorn, {args.workers} process(es); wrk for {args.duration} s per row, 127.0.0.1")
    print(
        f"{'route':10} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'queries':>7} {'commits':>7} {'new conns':>9}  (per request)"
    )
    try:
        for name, (path, body) in routes.items():
            script = scripts / f"{name}.lua"
            script.write_text(WRK_SCRIPT.format(body=json.dumps(json.dumps(body)), token=raw_token))
            # Steady state: the web process's pool has grown to what the load needs.
            _wrk(f"http://127.0.0.1:{port}{path}", script, max(args.connections), WARM_UP_SECONDS)
            for connections in args.connections:
                before = _pg_counters(connection)
                run = _wrk(f"http://127.0.0.1:{port}{path}", script, connections, args.duration)
                after = _pg_counters(connection)
                # Minus the two statements of reading the counters themselves.
                commits = (after[0] - before[0] - 1) / run["requests"]
                sessions = (after[1] - before[1]) / run["requests"]
                print(
                    f"{name:10} {connections:5} {run['rps']:8.0f} {run['p50']:7.1f} "
                    f"{run['p99']:7.1f} {run['errors']:6} {queries[name]:7} {commits:7.2f} "
                    f"{sessions:9.3f}"
                )
    finally:
        web.terminate()
        web.wait(30)


def _pg_counters(connection) -> tuple[int, int]:
    """(commits, sessions) PostgreSQL counted for this database so far; read on a fresh
    connection each time, as statistics are per transaction snapshot."""
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        counters = cursor.fetchone()
    connection.close()
    return counters


if __name__ == "__main__":
    sys.exit(main())
