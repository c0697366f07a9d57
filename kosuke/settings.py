"""Settings for the whole service, read once from the environment (and an optional `.env`).

Every setting the operators may change is listed, with its default, in `.env.example`.
Production is the default: with `DEBUG` off, a missing `SECRET_KEY` stops the start-up.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from previews.engines import DEFAULT_SOCKET, EngineConfigError, engine_queue, engines_parse

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# Only a development process may fall back to a known key; production must set its own.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-development-only" if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set when DEBUG is off (or set DEBUG=true for development)"
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "kosuke.apps.KosukeConfig",
    "chat",
    "previews",
    "cleanup",
]

# Django's own, and WhiteNoise, as subclasses that do not hop to a thread for each hook
# under ASGI (kosuke.middleware). Django's deploy checks look for its own paths; the
# project's check kosuke.W001 looks for these instead.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]
MIDDLEWARE = [
    "kosuke.health.HealthMiddleware",  # first: /healthz and /readyz answer any Host, any scheme
    "kosuke.middleware.SecurityMiddleware",
    "kosuke.middleware.StaticFilesMiddleware",
    "kosuke.middleware.SessionMiddleware",
    "kosuke.middleware.CommonMiddleware",
    "kosuke.middleware.CsrfViewMiddleware",
    "kosuke.middleware.AuthenticationMiddleware",
    "kosuke.middleware.MessageMiddleware",
    "kosuke.middleware.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kosuke.urls"
WSGI_APPLICATION = "kosuke.wsgi.application"
ASGI_APPLICATION = "kosuke.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL only: the sweep relies on its partial indexes and row locks.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://kosuke@localhost:5432/kosuke")
}
# 0: no connection kept per thread (Django's advice under ASGI); the pool below keeps them.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Fail fast when the database is unreachable instead of hanging a request or a task.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
# Connections per web process, kept open and shared by its requests (psycopg's pool) so a
# request never opens one; 0 turns the pool off. Workers and beat never use it (a pool
# does not survive prefork's fork: kosuke.celery). PostgreSQL's max_connections must
# cover web processes x this + worker processes + a few.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=10)
if DATABASE_POOL_MAX_SIZE:
    # No check before each checkout (it costs a round trip per request): a connection
    # that broke (PostgreSQL restarted) fails its request with a 503 and leaves the pool.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": 10,  # seconds a request waits for a free connection, then 503
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://localhost:6379/0")
# Seconds a Redis command may take before the caller gets an error instead of a hang.
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=5.0)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The web process serves its own static files (the admin's), compressed and cacheable.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Request bodies above this size are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=256 * 1024)

# Behind a TLS-terminating proxy in production; see README ("check --deploy").
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True

# Previews: containers on the Docker engines of PREVIEW_ENGINES (previews.engines says how
# to write it); without it, one engine named `local` at DOCKER_HOST (default: the local
# socket), running at most PREVIEW_ENGINE_CAPACITY previews.
DOCKER_HOST = env.str("DOCKER_HOST", default="")
PREVIEW_ENGINES = env.str("PREVIEW_ENGINES", default="")
PREVIEW_ENGINE_CAPACITY = env.int("PREVIEW_ENGINE_CAPACITY", default=200)
# Read once here so that a list that cannot be read stops every process at start-up; the
# code reads it through previews.engines.engines() (tests may change the setting).
try:
    _engine_names = list(
        engines_parse(
            PREVIEW_ENGINES,
            default_url=DOCKER_HOST or DEFAULT_SOCKET,
            default_capacity=PREVIEW_ENGINE_CAPACITY,
        )
    )
except EngineConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# Celery: broker and results on Redis, JSON only, task events on for Flower.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXTENDED = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_TRACK_STARTED = True
# A task is acknowledged only once it finished, and a task whose worker died is
# redelivered (after the visibility timeout on Redis); each worker process holds one
# message at a time, so a lost worker strands at most one stop per process.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Results in Redis live 7 days (the source's completed-job retention); the durable
# history of runs and decisions lives in PostgreSQL (see cleanup.history).
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
# The sweeps have their own queue; everything that touches a Docker engine (people's
# preview requests, stops, list calls, removals) goes to that engine's queue,
# `engine.<name>`, served by workers started next to it (kosuke.celery.route_to_engine).
# Declared, so that a plain `celery -A kosuke worker` consumes them all; `-Q` still
# splits them between workers.
CELERY_TASK_QUEUES = [Queue("sweeps"), *(Queue(engine_queue(name)) for name in _engine_names)]
CELERY_TASK_DEFAULT_QUEUE = "sweeps"
CELERY_TASK_ROUTES = ("kosuke.celery.route_to_engine",)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Every task has limits; the tasks set tighter ones of their own.
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360

# Domain settings: units live in the names.
# Activity (sending a message, editing the session, opening the preview) within this many
# minutes keeps a preview running; ChatSession.idle_timeout_minutes overrides it per session.
CLEANUP_THRESHOLD_MINUTES = env.int("CLEANUP_THRESHOLD_MINUTES", default=30)
CLEANUP_INTERVAL_SECONDS = env.int("CLEANUP_INTERVAL_SECONDS", default=60)
# Stops a run hands out at most, longest idle first (an operator's run may ask fewer); the
# rest wait for the next sweep. What protects an engine is the bound below.
CLEANUP_BATCH_SIZE = env.int("CLEANUP_BATCH_SIZE", default=10_000)
# Stops handed out and not yet settled on one engine at most: a sweep hands out more only as
# earlier ones settle, so a backlog waits in the database, decided afresh, not in a queue.
# At most ENGINE_CONCURRENCY (the default matches it): stops then never queue on the
# engine's queue ahead of people's requests and the sweep's list calls.
CLEANUP_STOPS_IN_FLIGHT_PER_ENGINE = env.int("CLEANUP_STOPS_IN_FLIGHT_PER_ENGINE", default=100)
# After the last viewer left, wait this long for a reconnect before stopping.
CLEANUP_GRACE_SECONDS = env.int("CLEANUP_GRACE_SECONDS", default=30)
# Stop any preview running longer than this, whatever its activity; 0 turns it off.
PREVIEW_MAX_AGE_MINUTES = env.int("PREVIEW_MAX_AGE_MINUTES", default=0)
# Off: beat schedules no sweeps and nothing is handed to workers (cleanup_previews still
# works inline), for deployments that run no worker.
WORKER_ENABLED = env.bool("WORKER_ENABLED", default=True)
CELERY_BEAT_SCHEDULE = (
    {
        "sweep": {
            "task": "cleanup.sweep",
            "schedule": CLEANUP_INTERVAL_SECONDS,
            # A sweep that could not start within one interval is dropped, not piled up.
            "options": {"expires": CLEANUP_INTERVAL_SECONDS},
        },
        "prune-history": {"task": "cleanup.prune_history", "schedule": 3600},
    }
    if WORKER_ENABLED
    else {}
)
# Seconds a web process remembers a valid API token (no query per request); a token
# revoked in another process stops working at most this much later. 0: look up each time.
API_TOKEN_CACHE_SECONDS = env.int("API_TOKEN_CACHE_SECONDS", default=30)
# Operators: the cron endpoint's bearer secret and Prometheus' scrape token (empty: off).
CRON_SECRET = env.str("CRON_SECRET", default="")
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# The dashboard's live streams (cleanup.live), per web process: each holds a Redis
# pub/sub connection while open. More are refused with 429.
LIVE_STREAMS_MAX = env.int("LIVE_STREAMS_MAX", default=500)
LIVE_STREAMS_PER_USER = env.int("LIVE_STREAMS_PER_USER", default=20)
# Seconds between keep-alive comments on an idle stream, so proxies keep it open.
LIVE_KEEPALIVE_SECONDS = env.float("LIVE_KEEPALIVE_SECONDS", default=15.0)
# A preview panel heartbeats every ~30 s; a viewer unseen for this long has left.
PRESENCE_PING_TIMEOUT_SECONDS = env.int("PRESENCE_PING_TIMEOUT_SECONDS", default=60)
# How far ahead a client may set a session's keep-alive ("busy until").
KEEPALIVE_MAX_HOURS = env.int("KEEPALIVE_MAX_HOURS", default=24)

# Seconds any Docker API call may take (a stop adds PREVIEW_STOP_TIMEOUT_SECONDS).
DOCKER_TIMEOUT_SECONDS = env.int("DOCKER_TIMEOUT_SECONDS", default=30)
PREVIEW_IMAGE = env.str("PREVIEW_IMAGE", default="kosuke-preview:latest")
# Seconds between SIGTERM and SIGKILL when a preview container stops.
PREVIEW_STOP_TIMEOUT_SECONDS = env.int("PREVIEW_STOP_TIMEOUT_SECONDS", default=10)
PREVIEW_MEMORY_MB = env.int("PREVIEW_MEMORY_MB", default=1024)
PREVIEW_CPUS = env.float("PREVIEW_CPUS", default=1.0)
# The kosuke.managed_by label: deployments sharing an engine never touch each other's previews.
PREVIEW_MANAGED_BY = env.str("PREVIEW_MANAGED_BY", default="kosuke")
# Threads of an engine's worker (`celery -A kosuke worker -Q engine.<name> -P threads -c N`):
# stops and requests waiting on Docker at once, so N stops that each take the whole stop
# timeout take about one stop timeout. They share DATABASE_POOL_MAX_SIZE connections;
# each process keeps up to N connections to its engine.
ENGINE_CONCURRENCY = env.int("ENGINE_CONCURRENCY", default=100)
# Hours a stopped preview keeps its containers (a reopen starts them again); after that
# the sweep removes them with their volumes, and a reopen creates fresh ones. 0: keep.
PREVIEW_RETENTION_HOURS = env.int("PREVIEW_RETENTION_HOURS", default=24)
# Minutes a labelled container no session owns is left alone before the sweep removes it:
# its open may still be being recorded.
ORPHAN_MIN_AGE_MINUTES = env.int("ORPHAN_MIN_AGE_MINUTES", default=10)
# Containers a sweep removes at most (retention and orphans, oldest first); the rest wait.
CLEANUP_REMOVALS_PER_SWEEP = env.int("CLEANUP_REMOVALS_PER_SWEEP", default=100)
# Seconds the web process waits for a worker to open, inspect or stop a preview.
PREVIEW_REQUEST_TIMEOUT_SECONDS = env.int("PREVIEW_REQUEST_TIMEOUT_SECONDS", default=60)

# The stop task's time limits follow the engine's: a Docker call, plus the stop timeout.
STOP_TASK_SOFT_TIME_LIMIT_SECONDS = DOCKER_TIMEOUT_SECONDS + PREVIEW_STOP_TIMEOUT_SECONDS + 60
STOP_TASK_TIME_LIMIT_SECONDS = STOP_TASK_SOFT_TIME_LIMIT_SECONDS + 30
# Stop retries wait up to 1, 2, 4 s (Celery's full jitter), never longer than this.
STOP_RETRY_BACKOFF_MAX_SECONDS = 60
# Seconds before Redis hands an unacknowledged task to another worker: how long the stops
# of a worker that died wait. Derived from the stop task's hard time limit plus its
# longest retry delay, so a stop that is still running is never handed out again.
CELERY_VISIBILITY_TIMEOUT_SECONDS = env.int(
    "CELERY_VISIBILITY_TIMEOUT_SECONDS",
    default=STOP_TASK_TIME_LIMIT_SECONDS + STOP_RETRY_BACKOFF_MAX_SECONDS + 60,
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS,
    # Look for messages of dead workers every quarter visibility timeout (at most each
    # minute) rather than kombu's default of about every 100 s.
    "unacked_restore_interval": max(1, min(60, CELERY_VISIBILITY_TIMEOUT_SECONDS // 4)),
    "unacked_restore_throttle": 1,
    # The lock a worker holds while it restores those messages (a few milliseconds). A
    # worker killed while holding it (SIGKILL, OOM) would block every restore for kombu's
    # default of 300 s; a restore pass takes far less than this.
    "unacked_mutex_expire": 10,
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}

# Error reports go to Sentry when SENTRY_DSN is set (web, worker and beat).
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="development" if DEBUG else "production")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
if SENTRY_DSN:
    from kosuke.sentry import sentry_init

    sentry_init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"logfmt": {"()": "kosuke.logs.KeyValueFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "logfmt"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The embedded development PostgreSQL narrates every command at INFO.
        "pgserver": {"level": "WARNING"},
        # Django's own console handler (on with DEBUG) would print each error a second
        # time, unformatted: its records go to the root handler only.
        "django": {"handlers": [], "propagate": True},
    },
}
