"""The HTTP read paths: the bare route (every ratio's denominator), ``/health``, the cached hot
path, the customer lookups by CPF, e-mail and phone, and the informative two-worker row.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from bench.baseline_app import BARE_PATH
from bench.load.scenarios.measure import Line, Lines, check_no_upstream, delta, http_scenario
from bench.load.settings import HOT_CPFS, say
from bench.load.stack import SANDBOX_SEED, start_app
from infra.sandbox.people import SyntheticPeople

if TYPE_CHECKING:
    from bench.load.session import Run

__all__ = ["fill_caches", "run_read_paths", "two_workers"]


def run_read_paths(run: Run) -> None:
    """The bare route (always), then the selected ones of health, hot, cpf, email, phone."""

    def bare_lines(_tag: str, _concurrency: int) -> list[Line]:
        return [("GET", BARE_PATH)]

    http_scenario(
        run,
        "bare",
        title="Bare Litestar route, no middleware (denominator)",
        path=f"GET {BARE_PATH}",
        lines=bare_lines,
    )
    if "health" in run.selected:
        http_scenario(
            run,
            "health",
            title="GET /health (full middleware stack, no I/O)",
            path="GET /health",
            lines=lambda _t, _c: [("GET", "/health")],
        )
    if "hot" in run.selected:
        http_scenario(
            run,
            "hot",
            title="Cached Work API lookup (the hot path: key, rate limit, cache read)",
            path="GET /api/v1/work/modules/all?documento=<cpf>",
            lines=lambda _t, _c: _hot_lines(run),
            headers=run.auth(),
            check=check_no_upstream(f"{HOT_CPFS} CPFs, every answer from the Redis cache"),
        )
    for kind, values in (
        ("cpf", run.ids.cpfs),
        ("email", run.ids.emails),
        ("phone", run.ids.phones),
    ):
        if kind in run.selected:
            http_scenario(
                run,
                kind,
                title=f"Customer lookup by {kind} (PostgreSQL hit)",
                path=f"GET /api/v1/contributor/customer?{kind}=...",
                lines=_lookup_lines(kind, values),
                headers=run.auth(),
                check=check_no_upstream(f"{len(values)} seeded parties, PostgreSQL only"),
            )


def _hot_lines(run: Run) -> list[Line]:
    return [("GET", f"/api/v1/work/modules/all?documento={c}") for c in run.hot_cpfs]


def _lookup_lines(kind: str, values: list[str]) -> Lines:
    def lines(_tag: str, _concurrency: int) -> list[Line]:
        return [("GET", f"/api/v1/contributor/customer?{kind}={quote(v)}") for v in values]

    return lines


FILL_CONCURRENCY = 16


def fill_caches(run: Run) -> None:
    """Load with every cache full: the RSS target's condition.

    Runs after every other scenario (whose caches are still held: the 64 hot-path dossiers,
    every lookup identifier by each kind), with wrk at concurrency 16 cycling over
    ``profile.fill_dossiers`` distinct CPFs not requested before (each one a Work API fetch on
    its first request, then cached) and every lookup identifier. The first pass fills the
    caches, the next ones hit them; the RSS sampled meanwhile is ``memory.caches_full_rss_mb``.
    An in-process cache holding up to that many dossiers is therefore full; a larger one is not,
    which the result states (``caches_full`` block).
    """
    count = run.profile.fill_dossiers
    say(f"caches_full: {count:,} distinct CPFs and every lookup identifier, c{FILL_CONCURRENCY}")
    people = SyntheticPeople(SANDBOX_SEED)
    lines: list[Line] = [
        ("GET", f"/api/v1/work/modules/all?documento={people.cpf_for(i)}")
        for i in range(HOT_CPFS, HOT_CPFS + count)
    ]
    for kind, values in (
        ("cpf", run.ids.cpfs),
        ("email", run.ids.emails),
        ("phone", run.ids.phones),
    ):
        lines += [("GET", f"/api/v1/contributor/customer?{kind}={quote(v)}") for v in values]
    run.label("caches_full")
    before = run.sandbox.counters()
    point = run.wrk(
        run.requests_file("fill", lines), FILL_CONCURRENCY, run.profile.fill_s, "cycle", run.auth()
    )
    fetched = delta(before, run.sandbox.counters(), "work_api")
    passes = point.requests / len(lines)
    run.result["caches_full"] = {
        "status": "ok" if point.error_rate <= 0.01 else f"error rate {point.error_rate:.1%}",
        "dossiers": count,
        "lookups": len(lines) - count,
        "requests": point.requests,
        "passes": round(passes, 2),
        "work_api_fetches": fetched,
        "rps": point.rps,
        "seconds": run.profile.fill_s,
    }
    say(
        f"  {point.requests:,} requests ({passes:.1f} passes over {len(lines):,} lines), "
        f"{fetched:,} Work API fetches, {point.rps:,.0f} req/s"
    )


def two_workers(run: Run) -> None:
    """Bare, health and hot at c16 and c64 with 2 Granian workers, unpinned (informative)."""
    say("two_workers: Granian with 2 workers, unpinned")
    run.procs.stop(run.server.proc)
    all_cores = f"0-{(os.cpu_count() or 1) - 1}"
    server = start_app(run.procs, run.env, workers=2, cpus=all_cores)
    points: dict[str, dict[str, Any]] = {}
    for name, lines, headers in (
        ("bare", [("GET", BARE_PATH)], {}),
        ("health", [("GET", "/health")], {}),
        ("hot", _hot_lines(run), run.auth()),
    ):
        requests_file = run.requests_file(f"2w-{name}", lines)
        run.wrk(
            requests_file,
            16,
            run.profile.warmup_s,
            "cycle",
            headers,
            server=server,
            cpus=all_cores,
        )
        points[name] = {}
        for concurrency in (16, 64):
            point = run.wrk(
                requests_file,
                concurrency,
                run.duration_s,
                "cycle",
                headers,
                server=server,
                cpus=all_cores,
            )
            points[name][str(concurrency)] = msgspec.to_builtins(point)
            say(f"  {name} c={concurrency}: {point.rps:,.0f} req/s p50 {point.p50_ms:.2f} ms")
    run.procs.stop(server.proc)
    run.result["two_workers"] = {"status": "ok", "points": points}
