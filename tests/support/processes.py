"""The one launcher of child processes in tests: Granian apps, the sandbox, workers.

Every child runs in its own process group with its output in a temporary file, and is killed
(with its group) when its owner is done with it, whatever happened in between. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "ROOT",
    "ChildProcess",
    "ServerDidNotStart",
    "free_port",
    "granian_argv",
    "granian_server",
    "worker_argv",
]

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_FACTORY = "infra.sandbox.app:create_sandbox_app"
APP_FACTORY = "app.main:create_app"


class ServerDidNotStart(RuntimeError):
    """The server exited or never answered its ready path; the message carries its output."""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def granian_argv(
    factory: str,
    port: int,
    *,
    workers: int = 1,
    kill_timeout_s: int = 5,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Granian serving ``factory`` (``module:function``) on ``127.0.0.1:port``, with the
    Dockerfile's flags (ASGI, uvloop, HTTP/1, no websockets)."""
    return [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        "asgi",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--workers-kill-timeout",
        str(kill_timeout_s),
        *extra_args,
    ]


def worker_argv(
    *, concurrency: int, lease_timeout_s: float, grace_s: float, metrics_port: int = 0
) -> list[str]:
    """``run_worker`` (what ``c2s-api worker`` runs) with explicit options, configured from the
    environment."""
    code = (
        "import sys\n"
        "from app.config import load_settings\n"
        "from app.cli.worker import run_worker\n"
        f"sys.exit(run_worker(load_settings(), concurrency={concurrency}, "
        f"lease_timeout_s={lease_timeout_s}, grace_s={grace_s}, "
        f"metrics_port={metrics_port}))\n"
    )
    return [sys.executable, "-c", code]


class ChildProcess:
    """A child process in its own process group, its output in a temporary file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.proc.pid

    def alive(self) -> bool:
        """Still running."""
        return self.proc.poll() is None

    def output(self, tail: int | None = None) -> str:
        """What the process printed so far (the last ``tail`` lines if given)."""
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        if tail is None:
            return text
        return "\n".join(text.splitlines()[-tail:])

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process (not its group)."""
        if self.alive():
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the process (no cleanup, no lease released) and reap it."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float) -> int | None:
        """SIGTERM, then the exit status; None (and the process killed) if it overran
        ``timeout_s``."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    async def wait(self, timeout_s: float) -> int | None:
        """The exit status, or None if it is still running after ``timeout_s``."""
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Kill the whole process group (idempotent) and close the log."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


def _answers(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def granian_server(
    factory: str,
    *,
    env: Mapping[str, str],
    ready_path: str,
    workers: int = 1,
    start_timeout_s: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Serve ``factory`` (``module:function``) under Granian until the block ends.

    Yields the base URL once ``ready_path`` answers 200; the process is terminated (its group
    killed if it overruns its shutdown) on exit, whatever happens in the block.

    Raises:
        ServerDidNotStart: it exited or did not answer within ``start_timeout_s``.
    """
    port = free_port()
    server = ChildProcess(
        factory, granian_argv(factory, port, workers=workers, extra_args=extra_args), env
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _answers(port, ready_path):
            if not server.alive() or time.monotonic() > deadline:
                raise ServerDidNotStart(
                    f"{factory} did not start (exit {server.proc.poll()}):\n{server.output()}"
                )
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate(timeout_s=20)
        server.stop()


@contextlib.contextmanager
def key_limited_app(
    e2e_env: Mapping[str, str], *, key_limit: str, workers: int, tag: str, **extra: str
) -> Iterator[str]:
    """The app under Granian with ``workers`` processes, only the per-key rate limit on
    (``key_limit``, e.g. ``"100/second"``), in a Redis key space of its own so no other test's
    requests count. ``extra`` are more environment variables."""
    env = {
        **os.environ,
        **e2e_env,
        "REDIS_KEY_PREFIX": e2e_env["REDIS_KEY_PREFIX"] + f"{tag}-{uuid.uuid4().hex[:6]}:",
        "RATE_LIMIT_KEY": key_limit,
        "RATE_LIMIT_IP": "",
        "RATE_LIMIT_GLOBAL": "",
        "DB_POOL_MAX": "5",
        **extra,
    }
    with granian_server(
        "app.main:create_app", env=env, ready_path="/health", workers=workers, start_timeout_s=60
    ) as url:
        yield url
