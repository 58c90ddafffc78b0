"""Child processes of a benchmark run: started on 127.0.0.1, pinned, always stopped.

Every child (Granian for the app, Granian for the sandbox, the queue worker, wrk) starts in its
own session, i.e. its own process group, so stopping it stops the whole tree (Granian's main
process and its workers) with one ``killpg``. :class:`ProcessGroup` stops every child it
started when its block exits, whatever the reason (normal end, exception, Ctrl-C); SIGTERM and
SIGHUP are turned into ``SystemExit`` by :func:`install_signal_handlers` so they unwind the same
way. Stopping is SIGTERM, then SIGKILL after a grace period: no orphan survives the runner.

Pinning: on a machine with two or more cores the server under test runs on core 0 and the load
generator (with the sandbox) on core 1 (``taskset``), so wrk never steals the server's CPU and
the numbers are repeatable; PostgreSQL and Redis are the machine's services and are left free.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType, TracebackType

__all__ = [
    "LOCALHOST",
    "Cores",
    "ProcessGroup",
    "cpu_seconds",
    "free_port",
    "install_signal_handlers",
    "pick_cores",
    "python",
    "rss_bytes",
    "wait_http",
    "worker_pids",
]

LOCALHOST: Final = "127.0.0.1"
_STOP_GRACE_S: Final = 15.0


class Cores:
    """Where each party runs: ``server`` and ``load`` are taskset CPU lists, or None (unpinned)."""

    __slots__ = ("load", "server")

    def __init__(self, server: str | None, load: str | None) -> None:
        self.server = server
        self.load = load

    def describe(self) -> str:
        """Human-readable pinning, for the report."""
        if self.server is None:
            return "unpinned"
        return f"server on core {self.server}, load generator and sandbox on core {self.load}"


def pick_cores(pin: bool) -> Cores:
    """Pin the server to core 0 and the load to core 1 when asked and possible."""
    if not pin or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return Cores(None, None)
    return Cores("0", "1")


def _pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    if cpus is None:
        return list(argv)
    return ["taskset", "-c", cpus, *argv]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 2xx.

    Raises:
        RuntimeError: ``proc`` exited, or nothing answered within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback URL
                if 200 <= answer.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def worker_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (Granian's workers), read from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: parse after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by ``pids`` (all their threads), in seconds.

    CPU time per request is the figure least disturbed by other work on the machine: waiting
    for a core lengthens latencies and lowers throughput, but adds little CPU time.
    """
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


class ProcessGroup:
    """Starts children in their own process groups and stops all of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list[IO[bytes]] = []
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cpus: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (pinned to ``cpus``), output to ``<log_dir>/<name>.log``."""
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            _pinned(argv, cpus),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg stops Granian's workers too
        )
        self._children.append((name, proc))
        return proc

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout_s: float,
        cpus: str | None = None,
    ) -> str:
        """Run a bounded command (wrk) to completion and return its stdout.

        Raises:
            RuntimeError: Non-zero exit, or still running after ``timeout_s`` (then killed).
        """
        proc = subprocess.Popen(
            _pinned(argv, cpus),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._children.append(("run", proc))
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise RuntimeError(f"{argv[0]} still running after {timeout_s:.0f} s") from None
        finally:
            self._forget(proc)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} exited {proc.returncode}: {err.decode(errors='replace')[-800:]}"
            )
        return out.decode(errors="replace")

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        self._children = [(n, p) for n, p in self._children if p is not proc]

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = _STOP_GRACE_S) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``grace_s``."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Workers of a dead parent may linger in the group for a moment: make sure.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._forget(proc)

    def stop_all(self) -> None:
        """Stop every child still running, newest first; close the log files."""
        for _name, proc in reversed(list(self._children)):
            self.stop(proc)
        for log in self._logs:
            log.close()
        self._logs.clear()


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGHUP unwind like Ctrl-C, so every child is stopped."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)


def python() -> str:
    """The interpreter running the benchmark (the project's virtual environment)."""
    return sys.executable
