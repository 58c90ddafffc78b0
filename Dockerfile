# syntax=docker/dockerfile:1.7
# Multi-stage build: the builder resolves the locked dependencies with uv; the runtime stage
# carries only the virtualenv and the sources, runs as a non-root user, and has no build tools.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first (cached layer), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY domain ./domain
COPY infra ./infra
COPY observability ./observability
RUN uv sync --frozen --no-dev --no-editable

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# The commit shown by the c2s_api_build_info metric: docker build --build-arg BUILD_COMMIT=$(git rev-parse --short HEAD)
ARG BUILD_COMMIT=unknown
RUN groupadd --system --gid 10001 c2s \
    && useradd --system --uid 10001 --gid c2s --no-create-home --shell /usr/sbin/nologin c2s
WORKDIR /app
COPY --from=builder --chown=c2s:c2s /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BUILD_COMMIT=${BUILD_COMMIT} \
    PORT=8080 \
    HOST=0.0.0.0 \
    GRANIAN_INTERFACE=asgi \
    GRANIAN_LOOP=uvloop \
    GRANIAN_HTTP=1 \
    GRANIAN_WORKERS=1 \
    GRANIAN_WORKERS_KILL_TIMEOUT=20 \
    GRANIAN_BACKPRESSURE=256 \
    GRANIAN_BACKLOG=2048 \
    GRANIAN_HTTP1_HEADER_READ_TIMEOUT=5000 \
    GRANIAN_RESPAWN_FAILED_WORKERS=true
# Granian's own process logs JSON too (the same formatter as the app's structlog lines).
RUN /app/.venv/bin/python -m observability.logging INFO json > /app/granian-log.json
USER 10001:10001
EXPOSE 8080
# Granian runs the app factory directly (one worker per VM; scale by adding machines).
# --workers-kill-timeout bounds shutdown; fly.toml's kill_timeout is larger. --backpressure,
# --backlog and --http1-header-read-timeout are app/cli/serve.py's GRANIAN_* limits (slow clients).
CMD ["granian", "--interface", "asgi", "--factory", "--loop", "uvloop", "--http", "1", "--no-ws", "--host", "0.0.0.0", "--port", "8080", "--workers", "1", "--backpressure", "256", "--backlog", "2048", "--http1-header-read-timeout", "5000", "--workers-kill-timeout", "20", "--respawn-failed-workers", "--log-config", "/app/granian-log.json", "app.main:create_app"]
