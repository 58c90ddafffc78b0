"""A small, bounded, open-loop HTTP load generator (aiohttp) and the figures of a run.

Requests are started on a fixed schedule (``rate_per_s``), whatever the answers take, so a slow
server shows up as latency and errors instead of quietly lowering the offered load (no
coordinated omission); at most ``concurrency`` are in flight, and the whole run is bounded by its
request count and by ``duration_s + timeout_s``. Every request is recorded: kind, start and end
(seconds since the run's origin), HTTP status or the connection error, ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "Figures",
    "LoadRun",
    "Request",
    "Sample",
    "figures",
    "format_block",
    "max_in_flight",
    "percentile",
    "recovery_time",
    "send",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One request to send.

    Attributes:
        kind: Label for the figures (``hot``, ``lookup``, ``webhook``...).
        method: HTTP method.
        path: Path and query, appended to the base URL.
        headers: Request headers.
        json: JSON body, if any.
        tag: The caller's correlation value (e.g. a webhook event's key).
    """

    kind: str
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None  # Any: a JSON document
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """What happened to one request.

    Attributes:
        kind: The request's kind.
        start: Seconds since the run's origin when it was sent.
        end: Seconds since the run's origin when the answer (or the error) arrived.
        status: The HTTP status, or None when no answer arrived.
        error: The client-side error class (connection refused/reset, timeout), if any.
        retry_after: The ``Retry-After`` header of the answer.
        tag: The request's tag.
        body: The answer's body (webhooks only: their counts matter to the ledger).
    """

    kind: str
    start: float
    end: float
    status: int | None
    error: str | None = None
    retry_after: str | None = None
    tag: str | None = None
    body: bytes | None = None

    @property
    def latency(self) -> float:
        """Seconds from send to answer."""
        return self.end - self.start

    @property
    def ok(self) -> bool:
        """Answered 2xx."""
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:  # Any: a JSON document
        """The decoded body (``None`` when absent or not JSON)."""
        if not self.body:
            return None
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None


class LoadRun:
    """Send ``factory(i)`` for i = 0..n-1 at ``rate_per_s``; collect :class:`Sample`\\ s.

    Args:
        base_url: ``http://127.0.0.1:<port>``.
        factory: Builds request ``i``.
        rate_per_s: Requests started per second.
        duration_s: Length of the schedule (``rate_per_s * duration_s`` requests).
        concurrency: Requests in flight at most (the schedule waits for a free slot).
        timeout_s: Client-side bound of one request.
        origin: ``time.monotonic()`` value that times are relative to (default: the start).
        keep_body: Kinds whose answer bodies are kept.
    """

    def __init__(
        self,
        base_url: str,
        factory: Callable[[int], Request],
        *,
        rate_per_s: float,
        duration_s: float,
        concurrency: int = 32,
        timeout_s: float = 15.0,
        origin: float | None = None,
        keep_body: Sequence[str] = ("webhook",),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.factory = factory
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.origin = time.monotonic() if origin is None else origin
        self.keep_body = frozenset(keep_body)
        self.samples: list[Sample] = []
        self._stop = asyncio.Event()

    @property
    def count(self) -> int:
        """Requests in the schedule."""
        return max(1, math.floor(self.rate_per_s * self.duration_s))

    def now(self) -> float:
        """Seconds since the origin."""
        return time.monotonic() - self.origin

    def stop(self) -> None:
        """Start no further request (those in flight finish)."""
        self._stop.set()

    async def run(self) -> list[Sample]:
        """Run the schedule to the end (or :meth:`stop`) and return the samples."""
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(2.0, self.timeout_s))
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        first = self.now()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with asyncio.timeout(self.duration_s + self.timeout_s + 10.0):
                for i in range(self.count):
                    delay = first + i / self.rate_per_s - self.now()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), delay)
                    if self._stop.is_set():
                        break
                    await slots.acquire()
                    task = asyncio.ensure_future(self._one(session, self.factory(i), slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(set(tasks))
        self.samples.sort(key=lambda s: s.start)
        return self.samples

    async def _one(
        self, session: aiohttp.ClientSession, request: Request, slots: asyncio.Semaphore
    ) -> None:
        try:
            sample = await send(session, self.base_url, request, self.origin, self.keep_body)
        finally:
            slots.release()
        self.samples.append(sample)


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    request: Request,
    origin: float,
    keep_body: frozenset[str] | set[str] = frozenset({"webhook"}),
) -> Sample:
    """Send one request on ``session`` and record what happened (never raises for HTTP or
    connection trouble; the session's timeout bounds it)."""
    start = time.monotonic() - origin
    status: int | None = None
    error: str | None = None
    retry_after: str | None = None
    body: bytes | None = None
    try:
        async with session.request(
            request.method,
            base_url + request.path,
            headers=dict(request.headers),
            json=request.json,
        ) as response:
            payload = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
            if request.kind in keep_body:
                body = payload
    except TimeoutError:
        error = "timeout"
    except (aiohttp.ClientError, OSError) as exc:
        error = type(exc).__name__
    return Sample(
        kind=request.kind,
        start=start,
        end=time.monotonic() - origin,
        status=status,
        error=error,
        retry_after=retry_after,
        tag=request.tag,
        body=body,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Figures:
    """Counts and latencies of a set of samples."""

    requests: int
    ok: int
    client_errors: int
    too_many: int
    unavailable: int
    unavailable_with_retry_after: int
    other_5xx: int
    connection_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    p99_503_ms: float
    other_5xx_statuses: tuple[int, ...] = ()

    def line(self) -> str:
        """One line of figures."""
        return (
            f"requests={self.requests} 2xx={self.ok} 4xx={self.client_errors} "
            f"429={self.too_many} 503={self.unavailable} "
            f"(Retry-After {self.unavailable_with_retry_after}) other5xx={self.other_5xx}"
            f"{list(self.other_5xx_statuses) if self.other_5xx else ''} "
            f"conn_errors={self.connection_errors} timeouts={self.timeouts} "
            f"p50={self.p50_ms:.0f}ms p99={self.p99_ms:.0f}ms max={self.max_ms:.0f}ms "
            f"p99(503)={self.p99_503_ms:.0f}ms"
        )


def figures(samples: Sequence[Sample]) -> Figures:
    """The figures of ``samples``."""
    statuses = [s.status for s in samples if s.status is not None]
    unavailable = [s for s in samples if s.status == 503]
    latencies = [s.latency * 1000 for s in samples]
    return Figures(
        requests=len(samples),
        ok=sum(1 for s in statuses if 200 <= s < 300),
        client_errors=sum(1 for s in statuses if 400 <= s < 500 and s != 429),
        too_many=sum(1 for s in statuses if s == 429),
        unavailable=len(unavailable),
        unavailable_with_retry_after=sum(1 for s in unavailable if s.retry_after),
        other_5xx=sum(1 for s in statuses if s >= 500 and s != 503),
        connection_errors=sum(1 for s in samples if s.error not in (None, "timeout")),
        timeouts=sum(1 for s in samples if s.error == "timeout"),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=0.0),
        p99_503_ms=percentile([s.latency * 1000 for s in unavailable], 99),
        other_5xx_statuses=tuple(sorted({s for s in statuses if s >= 500 and s != 503})),
    )


def recovery_time(
    samples: Sequence[Sample], since: float, *, ok: Callable[[Sample], bool] | None = None
) -> float:
    """Seconds after ``since`` until the service stopped failing.

    The end of the last failing request sent at or after ``since`` (failing: not ``ok``, by
    default not 2xx), minus ``since``; 0 when none failed.
    """
    good = ok or (lambda s: s.ok)
    bad = [s.end for s in samples if s.start >= since and not good(s)]
    return max(bad, default=since) - since


def max_in_flight(samples: Sequence[Sample], start: float, end: float) -> int:
    """Most requests outstanding at once (client side) at any moment within ``[start, end)``."""
    events: list[tuple[float, int]] = []
    for s in samples:
        if s.end > start and s.start < end:
            events.append((max(s.start, start), 1))
            events.append((s.end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def format_block(title: str, sections: Mapping[str, Sequence[Sample]], *extra: str) -> str:
    """The printed report of a scenario: figures overall and per section, then ``extra`` lines."""
    lines = [f"==== chaos: {title} ===="]
    for name, samples in sections.items():
        lines.append(f"  {name:<14} {figures(samples).line()}")
        kinds = sorted({s.kind for s in samples})
        if name == "all" and len(kinds) > 1:
            for kind in kinds:
                part = [s for s in samples if s.kind == kind]
                lines.append(f"    {kind:<12} {figures(part).line()}")
    lines.extend(f"  {line}" for line in extra)
    lines.append("=" * (len(title) + 18))
    return "\n".join(lines)
