"""The system under test: Granian serving the real app, and the upstream sandbox.

Both run as Granian processes on 127.0.0.1 with the flags of production (``--interface asgi
--factory``, ``--loop uvloop``, ``--http 1``, no websockets, no access log, bounded kill
timeout; see ``Dockerfile``). The app is configured only through its environment, like in
production, with:

* its own PostgreSQL database and Redis key prefix (nothing shared with tests or development);
* rate limits so high they never refuse (``1000000/second``) while the limiter still runs its
  Redis round trip on every request: the hot path is measured with rate limiting on;
* the three upstreams pointed at the sandbox, with the sandbox's credentials;
* ``LOG_LEVEL=WARNING`` (no access line per request) and ``OTEL_SDK_DISABLED=true`` (no
  exporter to reach).
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import TYPE_CHECKING, Any, Final

from bench.load.procs import LOCALHOST, free_port, python, wait_http

if TYPE_CHECKING:
    import subprocess

    from bench.load.procs import ProcessGroup

__all__ = [
    "RATE_LIMIT_UNREACHABLE",
    "SANDBOX_C2S_TOKEN",
    "SANDBOX_SEED",
    "Sandbox",
    "Server",
    "app_env",
    "start_app",
    "start_sandbox",
]

SANDBOX_SEED: Final = 20251122
# The sandbox's well-known credentials (infra.sandbox.app): they protect nothing.
SANDBOX_C2S_TOKEN: Final = "sandbox-c2s-token"  # noqa: S105
_SANDBOX_DIRETRIX_USER: Final = "sandbox"
_SANDBOX_DIRETRIX_PASS: Final = "sandbox-pass"  # noqa: S105
_SANDBOX_WORK_TOKEN: Final = "sandbox-work-token"  # noqa: S105
# The limiter runs (one Lua round trip per request) but never refuses.
RATE_LIMIT_UNREACHABLE: Final = "1000000/second"
APP_FACTORY: Final = "bench.baseline_app:create_bench_app"
SANDBOX_FACTORY: Final = "infra.sandbox.app:create_sandbox_app"
_KILL_TIMEOUT_S: Final = 10


def _granian(factory: str, port: int, workers: int) -> list[str]:
    return [
        python(),
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        factory,
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers-kill-timeout",
        str(_KILL_TIMEOUT_S),
    ]


def _base_env() -> dict[str, str]:
    # Nothing of the caller's app configuration leaks in: every setting that matters is set.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GRANIAN_", "OTEL_", "RATE_LIMIT_", "SANDBOX_"))
    }


class Sandbox:
    """The running sandbox and its admin API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def _call(self, method: str, path: str, body: object | None = None) -> Any:  # Any: JSON
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            raw = answer.read()
        return json.loads(raw) if raw else None

    def set_latency(self, upstream: str, latency_ms: float) -> None:
        """Add ``latency_ms`` to every answer of ``upstream`` (``work_api``, ``c2s``...)."""
        self._call("POST", f"/_sandbox/faults/{upstream}", {"latency_ms": latency_ms})

    def clear_faults(self) -> None:
        """No injected latency or error anywhere."""
        self._call("DELETE", "/_sandbox/faults")

    def counters(self) -> dict[str, dict[str, int]]:
        """Requests received per upstream and route."""
        found: dict[str, dict[str, int]] = self._call("GET", "/_sandbox/counters")
        return found

    def calls(self, upstream: str) -> int:
        """Requests received by ``upstream`` so far."""
        return sum(self.counters().get(upstream, {}).values())


class Server:
    """A running Granian serving the app (and the bare route)."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], workers: int) -> None:
        self.url = url
        self.proc = proc
        self.workers = workers


def start_sandbox(procs: ProcessGroup, *, cpus: str | None) -> Sandbox:
    """Start the sandbox (one Granian worker: its state is process memory)."""
    port = free_port()
    env = {
        **_base_env(),
        "SANDBOX_PORT": str(port),
        "SANDBOX_SEED": str(SANDBOX_SEED),
        "LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }
    proc = procs.start("sandbox", _granian(SANDBOX_FACTORY, port, 1), env=env, cpus=cpus)
    url = f"http://{LOCALHOST}:{port}"
    wait_http(f"{url}/_sandbox/health", 60, proc)
    return Sandbox(url, proc)


def app_env(
    *, database_url: str, redis_url: str, key_prefix: str, sandbox_url: str
) -> dict[str, str]:
    """The app's environment for a benchmark run."""
    return {
        **_base_env(),
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "RATE_LIMIT_IP": RATE_LIMIT_UNREACHABLE,
        "RATE_LIMIT_KEY": RATE_LIMIT_UNREACHABLE,
        "RATE_LIMIT_GLOBAL": RATE_LIMIT_UNREACHABLE,
        "C2S_BASE_URL": sandbox_url,
        "C2S_TOKEN": SANDBOX_C2S_TOKEN,
        "DIRETRIX_BASE_URL": sandbox_url,
        "DIRETRIX_USER": _SANDBOX_DIRETRIX_USER,
        "DIRETRIX_PASS": _SANDBOX_DIRETRIX_PASS,
        "WORK_API_BASE_URL": sandbox_url,
        "WORK_API_TOKEN": _SANDBOX_WORK_TOKEN,
        # Pool sizes, timeouts and caches stay at their defaults: what ships is what is measured.
    }


def start_app(
    procs: ProcessGroup, env: dict[str, str], *, workers: int, cpus: str | None
) -> Server:
    """Start Granian with ``workers`` workers serving the app and the bare route."""
    port = free_port()
    proc = procs.start(f"app-{workers}w", _granian(APP_FACTORY, port, workers), env=env, cpus=cpus)
    url = f"http://{LOCALHOST}:{port}"
    wait_http(f"{url}/health/ready", 60, proc)
    return Server(url, proc, workers)
