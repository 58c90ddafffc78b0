"""Drive load with wrk (Debian's 4.1) and read back what its Lua ``done()`` printed.

wrk is a separate process with a fixed number of connections (closed loop: a connection sends
its next request when the previous answer arrives), so "concurrency N" is exactly N requests in
flight. Latencies are wrk's, measured from the request write to the full answer, in
microseconds; we report milliseconds. One wrk thread is enough for our rates (tens of thousands
of requests per second) and keeps the generator on its one pinned core.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from bench.load.procs import ProcessGroup

__all__ = ["LUA_SCRIPT", "Point", "WrkErrors", "require_wrk", "run_wrk", "write_requests"]

LUA_SCRIPT: Final = Path(__file__).with_name("lua") / "requests.lua"
_MARKER: Final = "BENCH_JSON "

Mode = Literal["cycle", "unique", "counter"]


class WrkErrors(msgspec.Struct, frozen=True):
    """wrk's error counters (``status``: answers >= 400)."""

    connect: int
    read: int
    write: int
    status: int
    timeout: int

    @property
    def total(self) -> int:
        """All errors together."""
        return self.connect + self.read + self.write + self.status + self.timeout


class _Latency(msgspec.Struct, frozen=True):
    p50: int
    p90: int
    p99: int
    mean: float
    max: int


class _Done(msgspec.Struct, frozen=True):
    requests: int
    duration_us: int
    bytes: int
    errors: WrkErrors
    latency_us: _Latency
    wrapped: int


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """One measured point: a scenario at one concurrency.

    Attributes:
        concurrency: Connections (requests in flight).
        seconds: Measured duration.
        requests: Answers received.
        rps: Requests per second.
        p50_ms: Median latency.
        p90_ms: 90th percentile.
        p99_ms: 99th percentile.
        max_ms: Slowest request.
        errors: Socket errors and answers >= 400.
        error_rate: ``errors.total / requests``.
        wrapped: Times a "unique" request list ran out and was reused (0 when valid).
    """

    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: WrkErrors
    error_rate: float
    wrapped: int = 0


def require_wrk() -> str:
    """The wrk binary.

    Raises:
        RuntimeError: wrk is not installed (``scripts/bootstrap.sh`` installs it).
    """
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: run scripts/bootstrap.sh (apt-get install wrk)")
    return found


def write_requests(path: Path, lines: Iterable[tuple[str, str] | tuple[str, str, str]]) -> Path:
    """Write the request file read by the Lua script (METHOD, PATH[, BODY] per line)."""
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            if any("\t" in part or "\n" in part for part in line):
                raise ValueError("request lines cannot contain tabs or newlines")
            out.write("\t".join(line) + "\n")
    return path


def run_wrk(
    procs: ProcessGroup,
    *,
    base_url: str,
    requests_file: Path,
    concurrency: int,
    duration_s: float,
    mode: Mode = "cycle",
    headers: Mapping[str, str] | None = None,
    cpus: str | None = None,
    timeout_s: float = 10.0,
) -> Point:
    """Run wrk for ``duration_s`` with ``concurrency`` connections and return the point."""
    threads = 1
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "BENCH_REQUESTS": str(requests_file),
        "BENCH_MODE": mode,
        "BENCH_THREADS": str(threads),
        "BENCH_NONCE": uuid.uuid4().hex[:8],
        "BENCH_HEADERS": "|".join(f"{k}: {v}" for k, v in (headers or {}).items()),
    }
    argv = [
        require_wrk(),
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(LUA_SCRIPT),
        base_url,
    ]
    out = procs.run(argv, env=env, timeout_s=duration_s + timeout_s + 30, cpus=cpus)
    line = next((ln for ln in out.splitlines() if ln.startswith(_MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out[-500:]}")
    done = msgspec.json.decode(line[len(_MARKER) :], type=_Done)
    seconds = done.duration_us / 1e6
    lat = done.latency_us
    return Point(
        concurrency=concurrency,
        seconds=round(seconds, 3),
        requests=done.requests,
        rps=round(done.requests / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=lat.p50 / 1000,
        p90_ms=lat.p90 / 1000,
        p99_ms=lat.p99 / 1000,
        max_ms=lat.max / 1000,
        errors=done.errors,
        error_rate=round(done.errors.total / done.requests, 5) if done.requests else 1.0,
        wrapped=done.wrapped,
    )
