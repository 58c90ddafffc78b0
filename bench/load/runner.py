"""The benchmark runner: ``python -m bench [--short] [--scenarios ...] [--out FILE]``.

One run, start to finish, on 127.0.0.1 only and bounded in time:

1. micro benchmarks (pytest-benchmark, ``bench/micro``);
2. PostgreSQL: the seeded database is reused when its size matches (else created, migrated with
   ``c2s-api migrate`` and seeded), then reset to the seeded rows; an API key of the ``bench``
   tenant is created with ``c2s-api keys create``;
3. the sandbox (Granian, load core) and the app (Granian, 1 worker, server core) are started;
   the hot path's dossiers are cached, the lookups are checked to be PostgreSQL hits, and the
   Redis round trips of one request are counted in-process;
4. each HTTP scenario runs with wrk at concurrency 1, 16 and 64 for a fixed duration after a
   warm-up; the bare route runs first and last (the denominators);
5. ``/leads/process`` with 400 ms of Work API latency (64 concurrent leads), webhook acceptance,
   and the worker's drain rate;
6. an informative row with 2 Granian workers;
7. everything is stopped (also on Ctrl-C or an error), the database and Redis are cleaned, and
   the result is written as JSON and markdown.

This module is the command line and the result file; the run itself is
:class:`bench.load.session.Run`, its scenarios are in ``bench.load.scenarios``, the profiles and
limits in ``bench.load.settings``, and the data helpers (events, PostgreSQL, Redis) in
``bench.load.fixtures``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from bench.load import report
from bench.load.procs import install_signal_handlers
from bench.load.session import Run
from bench.load.settings import (
    FULL,
    PG_ADMIN_URL,
    REDIS_URL,
    REPO,
    RESULTS_DIR,
    SCENARIOS,
    SHORT,
    Profile,
    say,
)
from bench.load.sysinfo import machine_info

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FULL", "SCENARIOS", "SHORT", "Profile", "default_scenarios", "main", "run"]


def _default_out(result: dict[str, Any]) -> Path:
    sha = (result.get("machine", {}).get("git_sha") or "nogit")[:7]
    stamp = result["started_at"].replace("-", "").replace(":", "")[:13]
    return RESULTS_DIR / f"{stamp}-{result['mode']}-{sha}.json"


def _server_versions() -> tuple[str | None, str | None]:
    async def postgres() -> str | None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            version: str = await conn.fetchval("SHOW server_version")
            return version
        finally:
            await conn.close()

    try:
        pg = asyncio.run(postgres())
    except (OSError, asyncpg.PostgresError):
        pg = None
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        info: dict[str, Any] = client.info("server")
        client.close()
        rd = str(info.get("redis_version"))
    except Exception:  # informative only: a missing version must not fail the run
        rd = None
    return pg, rd


def default_scenarios(profile: Profile) -> tuple[str, ...]:
    """Everything, except the informative 2-worker and Redis Cluster rows in short mode (they
    gate nothing)."""
    if profile.name == "short":
        return tuple(s for s in SCENARIOS if s not in ("two_workers", "cluster"))
    return SCENARIOS


def run(
    profile: Profile,
    scenarios: Sequence[str] = SCENARIOS,
    *,
    out: Path | None = None,
    pin: bool = True,
    duration_s: float | None = None,
    parties: int | None = None,
    database: str | None = None,
    drop_db: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Run a benchmark and write ``<out>.json`` and ``<out>.md``; return (result, json path)."""
    os.chdir(REPO)  # Granian imports the factories from the work tree
    install_signal_handlers()
    runner = Run(
        profile,
        scenarios,
        pin=pin,
        duration_s=duration_s,
        parties=parties,
        database=database,
        drop_db=drop_db,
    )
    result = runner.execute()
    pg, rd = _server_versions()
    result["machine"] = machine_info(REPO, postgres=pg, redis=rd)
    result["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result["ratios"] = report.compute_ratios(result)
    result["targets"] = report.evaluate_targets(result)
    path = out or _default_out(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    path.with_suffix(".md").write_text(report.markdown(result))
    return result, path


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m bench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="c2s-api benchmark: wrk against Granian on 127.0.0.1, bounded in time.",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="CI mode: 2 s per point, 20,000 parties, no 2-worker row (about 3 minutes)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=None,
        help="run only these (the bare route always runs: it is every ratio's denominator)",
    )
    parser.add_argument("--out", type=Path, default=None, help="result JSON path (.md beside it)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per point")
    parser.add_argument("--parties", type=int, default=None, help="seeded parties")
    parser.add_argument("--db", default=None, help="database name (default c2s_bench[_short])")
    parser.add_argument("--drop-db", action="store_true", help="drop the database at the end")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench`` (and of a ``c2s-api bench`` command)."""
    args = build_parser().parse_args(argv)
    profile = SHORT if args.short else FULL
    result, path = run(
        profile,
        args.scenarios or default_scenarios(profile),
        out=args.out,
        pin=not args.no_pin,
        duration_s=args.duration,
        parties=args.parties,
        database=args.db,
        drop_db=args.drop_db,
    )
    print(report.markdown(result))
    say(f"result written to {path} and {path.with_suffix('.md')}")
    return 0
