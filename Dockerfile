# One image for web, worker, beat and flower; the compose command is the only difference.
# Build: docker build -t kosuke-preview-cleanup .

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir "uv>=0.5"
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app
# Dependencies first, from the lock file only, so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev --no-editable \
 && DEBUG=false SECRET_KEY=collectstatic-only /opt/venv/bin/python manage.py collectstatic --noinput

FROM python:3.11-slim
# A fixed uid/gid, so volumes and the Docker socket group can be granted to it.
RUN groupadd --system --gid 10001 kosuke \
 && useradd --system --uid 10001 --gid kosuke --home-dir /app --shell /usr/sbin/nologin kosuke
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=kosuke:kosuke /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=kosuke.settings
USER kosuke
EXPOSE 8000
# The web process; compose gives worker, beat and flower health checks of their own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Open dashboard streams (/ops/events) never end by themselves: on SIGTERM they get 10 s,
# then they are cut and the browsers reconnect elsewhere, resuming by Last-Event-ID.
CMD ["uvicorn", "kosuke.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers", "--forwarded-allow-ips", "*", "--timeout-graceful-shutdown", "10"]
