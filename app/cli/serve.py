"""``c2s-api serve``: Granian with the app factory and the Dockerfile's deployment flags.

The embedded default is decided here, not in the composition root: an upstream without a
configured ``*_BASE_URL`` is the local sandbox (started on ``SANDBOX_PORT``) with the sandbox's
credentials, passed to the app as explicit settings (:func:`embedded_upstreams`; the Granian
workers read them from the environment). With ``ENVIRONMENT=development`` it applies the
migrations first and runs a ``c2s-api worker`` beside the API (:func:`embedded_worker`: webhook
jobs, bulk job items, callbacks), so a fresh clone runs the whole pipeline with one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import msgspec
import structlog

from app.config import Secret
from observability.logging import configure_logging, granian_log_dictconfig

if TYPE_CHECKING:
    from collections.abc import Iterator

    from app.config import Settings

__all__ = [
    "GRANIAN_BACKLOG",
    "GRANIAN_BACKPRESSURE",
    "GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS",
    "embedded_environment",
    "embedded_sandbox",
    "embedded_upstreams",
    "embedded_worker",
    "serve",
]

# Granian's own limits, the same in the Dockerfile's command (a deploy test compares them).
# Requests processed at once per worker: a request holds its slot while its body arrives, so
# MAX_PENDING_BODIES stays below this (idle keep-alive connections hold none).
GRANIAN_BACKPRESSURE = 256
# Accepted connections waiting for a slot (the kernel caps it at net.core.somaxconn).
GRANIAN_BACKLOG = 2048
# A client must send its whole request head within this, else the connection is closed.
GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS = 5000

log = structlog.get_logger("app.cli.serve")


def embedded_environment(settings: Settings) -> dict[str, str]:
    """The variables that point each upstream without a configured URL at the local sandbox,
    with the sandbox's credentials (empty: every upstream is configured)."""
    from infra.sandbox.settings import SandboxSettings

    sandbox = SandboxSettings(port=settings.sandbox_port)
    local = f"http://127.0.0.1:{settings.sandbox_port}"
    env: dict[str, str] = {}
    if not settings.c2s_base_url:
        env |= {"C2S_BASE_URL": local, "C2S_TOKEN": sandbox.c2s_token}
    if not settings.diretrix_base_url:
        env |= {
            "DIRETRIX_BASE_URL": local,
            "DIRETRIX_USER": sandbox.diretrix_user,
            "DIRETRIX_PASS": sandbox.diretrix_pass,
        }
    if not settings.work_api_base_url:
        env |= {"WORK_API_BASE_URL": local, "WORK_API_TOKEN": sandbox.work_api_token}
    return env


def embedded_upstreams(settings: Settings) -> Settings:
    """``settings`` with the embedded default applied (:func:`embedded_environment`)."""
    env = embedded_environment(settings)
    if not env:
        return settings
    return msgspec.structs.replace(
        settings,
        c2s_base_url=env.get("C2S_BASE_URL", settings.c2s_base_url),
        c2s_token=Secret(env["C2S_TOKEN"]) if "C2S_TOKEN" in env else settings.c2s_token,
        diretrix_base_url=env.get("DIRETRIX_BASE_URL", settings.diretrix_base_url),
        diretrix_user=env.get("DIRETRIX_USER", settings.diretrix_user),
        diretrix_pass=Secret(env["DIRETRIX_PASS"])
        if "DIRETRIX_PASS" in env
        else settings.diretrix_pass,
        work_api_base_url=env.get("WORK_API_BASE_URL", settings.work_api_base_url),
        work_api_token=Secret(env["WORK_API_TOKEN"])
        if "WORK_API_TOKEN" in env
        else settings.work_api_token,
    )


def _stop_child(child: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    """SIGTERM ``child`` (if it still runs), wait up to ``timeout_s`` for it, then SIGKILL it."""
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)


@contextlib.contextmanager
def embedded_sandbox(settings: Settings) -> Iterator[str | None]:
    """Run the sandbox in a child process while the block runs, when the settings call for it."""
    if not embedded_environment(settings):
        yield None
        return
    url = f"http://127.0.0.1:{settings.sandbox_port}"
    child = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "app.cli", "sandbox", "--port", str(settings.sandbox_port)],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise SystemExit(f"sandbox exited with status {child.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=1):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.2)
        log.info(
            "embedded_sandbox_started",
            url=url,
            note="no upstream URL configured: C2S, Diretrix and the Work API are simulated",
        )
        yield url
    finally:
        _stop_child(child, timeout_s=10)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _terminate_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In the child before exec (Linux): SIGTERM when the parent dies, even by SIGKILL, so an
    embedded worker never outlives its ``serve``."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def embedded_worker(settings: Settings, *, enabled: bool = True) -> Iterator[int | None]:
    """In development, run ``c2s-api worker`` in a child process while the block runs.

    So that on a laptop the webhook events and the bulk jobs the API accepts are processed, as a
    deployment's separate worker processes would. The child has its own session (a Ctrl-C in the
    terminal reaches the API only); it gets one SIGTERM when the block ends (or when this process
    dies, on Linux), drains for ``WORKER_GRACE_S`` and is killed if it overruns that. Yields its
    pid (None when not run: another environment, or ``enabled`` false: ``serve --no-worker``).
    """
    if not enabled or settings.environment != "development":
        yield None
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env={**os.environ, **embedded_environment(settings)},
        start_new_session=True,
        preexec_fn=_terminate_with_parent,  # before Granian: no other thread runs yet
    )
    log.info(
        "embedded_worker_started",
        pid=child.pid,
        metrics=f"http://{settings.host}:{settings.worker_metrics_port}/metrics",
        note="development: webhook jobs and bulk jobs are processed by this child process",
    )
    try:
        yield child.pid
    finally:
        _stop_child(child, timeout_s=settings.worker_grace_s + 5)


async def _prepare_development(settings: Settings) -> None:
    """Embedded default: apply migrations and make sure a development API key exists."""
    from app.bootstrap import open_pool
    from app.cli.dev_key import ensure_dev_key
    from infra.db.migrate import migrate

    await migrate(settings.database_url)
    log.info("migrations_applied")
    async with open_pool(settings, min_size=1) as pool:
        if await ensure_dev_key(pool, environment=settings.environment) is None:
            log.info(
                "development_key_exists",
                hint="create another with: c2s-api keys create --name me --tenant dev",
            )


def serve(
    settings: Settings,
    *,
    workers: int | None = None,
    port: int | None = None,
    host: str | None = None,
    worker: bool = True,
) -> int:
    """Run the API in the foreground until SIGINT/SIGTERM; return the exit status.

    In development a worker runs beside it unless ``worker`` is false (:func:`embedded_worker`).
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    configure_logging(settings.log_level, settings.log_format)
    if settings.environment == "development":
        asyncio.run(_prepare_development(settings))
    bind_port = port or settings.port
    bind_host = host or settings.host
    with embedded_sandbox(settings), embedded_worker(settings, enabled=worker):
        # The Granian workers build their settings from the environment (app.main:create_app).
        os.environ.update(embedded_environment(settings))
        log.info(
            "serving",
            url=f"http://{bind_host}:{bind_port}",
            docs=f"http://{bind_host}:{bind_port}/docs",
            workers=workers or settings.web_workers,
        )
        server = Granian(
            "app.main:create_app",
            factory=True,
            interface=Interfaces.ASGI,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            websockets=False,
            backlog=GRANIAN_BACKLOG,
            backpressure=GRANIAN_BACKPRESSURE,
            http1_settings=HTTP1Settings(
                header_read_timeout=GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS, keep_alive=True
            ),
            address=bind_host,
            port=bind_port,
            workers=workers or settings.web_workers,
            workers_kill_timeout=settings.workers_kill_timeout,
            respawn_failed_workers=True,
            log_access=False,
            log_dictconfig=granian_log_dictconfig(settings.log_level, settings.log_format),
        )
        server.serve()
    return 0
