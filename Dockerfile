# One image for web, worker, beat and flower; the compose command is the only difference.
# Build: docker build -t kosuke-preview-cleanup .
# Without a registry (no Docker Hub, no PyPI inside the build): scripts/build-image --local-bases

# Any Debian-like image with python3 and its venv module; a local one where no registry is.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# Wheels that scripts/build-image downloaded on the host. When there are some, the build
# installs from them alone and needs no network; otherwise it downloads from PyPI.
COPY deploy/wheelhouse/ /wheels/
# Dependencies first, from the lock file only (with its hashes), so code changes reuse
# this layer. The project itself is not installed: it runs from /app (PYTHONPATH).
COPY deploy/build-requirements.txt pyproject.toml uv.lock ./
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then source="--no-index --find-links /wheels"; \
    else source=""; fi; \
    python3 -m venv /opt/build-tools; \
    /opt/build-tools/bin/pip install --quiet --require-hashes $source -r build-requirements.txt; \
    /opt/build-tools/bin/uv export --frozen --no-dev --no-emit-project --quiet -o requirements.txt; \
    python3 -m venv --without-pip /opt/venv; \
    /opt/build-tools/bin/uv pip install --quiet --python /opt/venv/bin/python --require-hashes \
      $source -r requirements.txt
COPY . .
RUN DEBUG=false SECRET_KEY=collectstatic-only /opt/venv/bin/python manage.py collectstatic --noinput \
 && rm -rf deploy requirements.txt build-requirements.txt \
 && /opt/venv/bin/python -m compileall -q .

FROM ${PYTHON_IMAGE}
# A fixed uid/gid, so volumes and the Docker socket group can be granted to it.
RUN groupadd --system --gid 10001 kosuke \
 && useradd --system --uid 10001 --gid kosuke --home-dir /app --shell /usr/sbin/nologin kosuke
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=kosuke:kosuke /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=kosuke.settings
USER kosuke
EXPOSE 8000
# The web process; compose gives worker, beat and flower health checks of their own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Open dashboard streams (/ops/events) never end by themselves: on SIGTERM they get 10 s,
# then they are cut and the browsers reconnect elsewhere, resuming by Last-Event-ID.
# Django's ASGI handler has no lifespan events: off, instead of a log line saying so.
CMD ["uvicorn", "kosuke.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers", "--forwarded-allow-ips", "*", "--lifespan", "off", \
     "--timeout-graceful-shutdown", "10"]
