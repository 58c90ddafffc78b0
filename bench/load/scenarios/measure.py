"""How an HTTP scenario is measured: wrk after a warm-up at each concurrency, every point
paired with the bare route at the same concurrency, and the checks on the sandbox's counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from bench.baseline_app import BARE_PATH, COUNTERS_PATH
from bench.load.fixtures import http_request
from bench.load.procs import cpu_seconds, worker_pids
from bench.load.settings import CONCURRENCIES, MAX_ERROR_RATE, say

if TYPE_CHECKING:
    from bench.load.session import Run
    from bench.load.wrk import Mode, Point

__all__ = [
    "Check",
    "Counts",
    "Line",
    "Lines",
    "bare_point",
    "check_no_upstream",
    "delta",
    "http_scenario",
    "round_trip_counters",
]

Line: TypeAlias = tuple[str, str] | tuple[str, str, str]
Lines: TypeAlias = Callable[[str, int], list[Line]]
Counts: TypeAlias = dict[str, dict[str, int]]
Check: TypeAlias = Callable[[Counts, Counts, int], tuple[bool, str]]


def http_scenario(
    run: Run,
    name: str,
    *,
    title: str,
    path: str,
    lines: Lines,
    mode: Mode = "cycle",
    headers: dict[str, str] | None = None,
    check: Check | None = None,
) -> None:
    """Measure ``name`` at every concurrency; write ``result["scenarios"][name]``."""
    say(f"{name}: {title}")
    block: dict[str, Any] = {"title": title, "path": path, "status": "ok", "points": {}}
    run.result["scenarios"][name] = block
    sent_headers = headers or {}
    run.label(name)
    before = run.sandbox.counters()
    total = 0
    warm = run.wrk(
        run.requests_file(f"{name}-warm", lines("warm", 16)),
        min(16, max(CONCURRENCIES)),
        run.profile.warmup_s,
        mode,
        sent_headers,
    )
    total += warm.requests
    for concurrency in CONCURRENCIES:
        requests_file = run.requests_file(
            f"{name}-c{concurrency}", lines(f"c{concurrency}", concurrency)
        )
        # The denominator is measured right before, at the same concurrency: a machine
        # whose speed drifts (other work, turbo, thermal) moves both figures alike.
        pair = bare_point(run, concurrency) if name != "bare" else None
        workers = worker_pids(run.server.proc.pid)
        trips_before = round_trip_counters(run)
        cpu_before = cpu_seconds(workers)
        point = run.wrk(requests_file, concurrency, run.duration_s, mode, sent_headers)
        cpu = cpu_seconds(workers) - cpu_before
        trips = _trips_delta(trips_before, round_trip_counters(run))
        total += point.requests
        data = _point_data(point, cpu, pair, concurrency)
        data.update(_trips_data(trips, point.requests, run.duration_s))
        if "redis_round_trips_per_request" in data:
            say(
                f"        round trips per request: Redis "
                f"{data['redis_round_trips_per_request']:g}, PostgreSQL "
                f"{data['postgres_round_trips_per_request']:g}; background per second: Redis "
                f"{data['redis_background_per_s']:g}, "
                f"PostgreSQL {data['postgres_background_per_s']:g}"
            )
        block["points"][str(concurrency)] = data
    if check is not None:
        ok, text = check(before, run.sandbox.counters(), total)
        block["check_ok"] = ok
        block["check"] = text
        say(f"  check: {text}")


def round_trip_counters(run: Run) -> dict[str, int] | None:
    """The server worker's round-trip counters (``bench.baseline_app``), or None if unreadable."""
    try:
        status, body = http_request("GET", f"{run.server.url}{COUNTERS_PATH}", timeout_s=5)
    except OSError:
        return None
    if status != 200:
        return None
    counts: dict[str, int] = msgspec.json.decode(body)
    return counts


def _trips_delta(
    before: dict[str, int] | None, after: dict[str, int] | None
) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before.get(k, 0) for k in after}


def _trips_data(trips: dict[str, int] | None, requests: int, seconds: float) -> dict[str, Any]:
    """Round trips per request (sent while serving one) and per second (background work)."""
    if trips is None or not requests:
        return {}
    data: dict[str, Any] = {"round_trips": trips}
    for backend in ("redis", "postgres"):
        data[f"{backend}_round_trips_per_request"] = round(
            trips[f"{backend}_request"] / requests, 3
        )
        data[f"{backend}_background_per_s"] = round(trips[f"{backend}_background"] / seconds, 2)
    return data


def _point_data(point: Point, cpu: float, pair: Point | None, concurrency: int) -> dict[str, Any]:
    """A point of the result (Any: JSON): wrk's figures, CPU per request, its pair, validity."""
    data: dict[str, Any] = msgspec.to_builtins(point)
    if point.requests:
        data["cpu_us_per_request"] = round(cpu * 1e6 / point.requests, 1)
    if pair is not None:
        data["bare"] = {"rps": pair.rps, "p50_ms": pair.p50_ms}
    problems = []
    if point.error_rate > MAX_ERROR_RATE:
        problems.append(f"error rate {point.error_rate:.1%}")
    if point.wrapped:
        problems.append("ran out of fresh requests")
    if problems:
        data["invalid"] = "; ".join(problems)
    say(
        f"  c={concurrency:<3} {point.rps:>9,.0f} req/s  p50 {point.p50_ms:7.2f} ms  "
        f"p99 {point.p99_ms:7.2f} ms  cpu {data.get('cpu_us_per_request', 0):6.0f} us/req"
        + (f"  (bare {pair.rps:,.0f} req/s, p50 {pair.p50_ms:.2f} ms)" if pair else "")
        + f"  errors {point.errors.total}"
        + (f"  INVALID: {data['invalid']}" if problems else "")
    )
    return data


def bare_point(run: Run, concurrency: int, duration_s: float | None = None) -> Point:
    """The bare route at ``concurrency`` (a paired denominator)."""
    point = run.wrk(
        run.requests_file("bare-pair", [("GET", BARE_PATH)]),
        concurrency,
        duration_s or run.duration_s,
        "cycle",
        {},
    )
    if point.error_rate > MAX_ERROR_RATE:
        raise RuntimeError(f"the bare route failed: error rate {point.error_rate:.1%}")
    return point


def delta(before: Counts, after: Counts, upstream: str, contains: str = "") -> int:
    """Calls the sandbox's ``upstream`` received between two readings (routes with
    ``contains``)."""

    def total(counts: Counts) -> int:
        return sum(v for route, v in counts.get(upstream, {}).items() if contains in route)

    return total(after) - total(before)


def check_no_upstream(what: str) -> Check:
    """A check that no upstream was called during the scenario."""

    def check(before: Counts, after: Counts, total: int) -> tuple[bool, str]:
        calls = {u: delta(before, after, u) for u in ("c2s", "diretrix", "work_api")}
        ok = not any(calls.values())
        text = (
            f"verified: {total:,} requests, {what}, no upstream call"
            if ok
            else f"NOT verified: upstream calls during the run {calls}"
        )
        return ok, text

    return check
