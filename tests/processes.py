"""Real server processes for tests: Granian serving an app factory on a free loopback port."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = ["ROOT", "ServerDidNotStart", "free_port", "granian_server"]

ROOT = Path(__file__).resolve().parents[1]


class ServerDidNotStart(RuntimeError):
    """The server exited or never answered its ready path; the message carries its output."""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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

    Yields the base URL once ``ready_path`` answers 200; the process is terminated (killed if it
    overruns its shutdown) on exit, whatever happens in the block.

    Raises:
        ServerDidNotStart: it exited or did not answer within ``start_timeout_s``.
    """
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
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
            "5",
            *extra_args,
        ],
        cwd=ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _answers(port, ready_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                output = log.read().decode(errors="replace")
                raise ServerDidNotStart(f"{factory} did not start (exit {proc.poll()}):\n{output}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
