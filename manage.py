#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

A setting that is missing or a store that does not answer is one line on stderr and
exit code 2, not a traceback. Commands connect to PostgreSQL directly (no pool) and
log as component=command.
"""

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kosuke.settings")
    # One command, one connection: the pool is for web processes (kosuke.settings).
    os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "0")
    from kosuke.logs import bind_component

    bind_component("command")  # its log lines say so, not component=web
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        print(f"manage.py: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, RedisConnectionError) as exc:
        store = "Redis" if isinstance(exc, RedisConnectionError) else "PostgreSQL"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"manage.py: {store} does not answer ({first_line}); beside ./scripts/run, "
            "use ./scripts/manage, which finds its stores",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
