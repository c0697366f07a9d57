"""Settings for the whole service, read once from the environment (and an optional `.env`).

Every setting the operators may change is listed, with its default, in `.env.example`.
Production is the default: with `DEBUG` off, a missing `SECRET_KEY` stops the start-up.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

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
    "chat",
    "previews",
    "cleanup",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
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
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True

# Domain settings: units live in the names.
# Activity (sending a message, editing the session, opening the preview) within this many
# minutes keeps a preview running; ChatSession.idle_timeout_minutes overrides it per session.
CLEANUP_THRESHOLD_MINUTES = env.int("CLEANUP_THRESHOLD_MINUTES", default=30)
# A preview panel heartbeats every ~30 s; a viewer unseen for this long has left.
PRESENCE_PING_TIMEOUT_SECONDS = env.int("PRESENCE_PING_TIMEOUT_SECONDS", default=60)
# How far ahead a client may set a session's keep-alive ("busy until").
KEEPALIVE_MAX_HOURS = env.int("KEEPALIVE_MAX_HOURS", default=24)

# Previews: containers on the Docker engine at DOCKER_HOST (default: the local socket).
DOCKER_HOST = env.str("DOCKER_HOST", default="")
# Seconds any Docker API call may take (a stop adds PREVIEW_STOP_TIMEOUT_SECONDS).
DOCKER_TIMEOUT_SECONDS = env.int("DOCKER_TIMEOUT_SECONDS", default=30)
PREVIEW_IMAGE = env.str("PREVIEW_IMAGE", default="kosuke-preview:latest")
# Seconds between SIGTERM and SIGKILL when a preview container stops.
PREVIEW_STOP_TIMEOUT_SECONDS = env.int("PREVIEW_STOP_TIMEOUT_SECONDS", default=10)
PREVIEW_MEMORY_MB = env.int("PREVIEW_MEMORY_MB", default=1024)
PREVIEW_CPUS = env.float("PREVIEW_CPUS", default=1.0)
# The kosuke.managed_by label: deployments sharing an engine never touch each other's previews.
PREVIEW_MANAGED_BY = env.str("PREVIEW_MANAGED_BY", default="kosuke")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # The embedded development PostgreSQL narrates every command at INFO.
    "loggers": {"pgserver": {"level": "WARNING"}},
}
