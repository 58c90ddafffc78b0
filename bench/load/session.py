"""One benchmark run, start to finish: the stack, the scenarios in order, the clean-up.

:class:`Run` holds the run's state (profile, processes, database, API key, sandbox, server,
RSS sampler, the result document) and orchestrates it; each scenario family lives in
``bench.load.scenarios`` and writes its block of the result through the :class:`Run` it is
given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bench.load.database import (
    Database,
    Identifiers,
    create_api_key,
    drop_database,
    ensure_database,
    reset_run_state,
    sample_identifiers,
)
from bench.load.fixtures import clean_redis, http_request
from bench.load.micro import run_micro
from bench.load.procs import (
    Cores,
    ProcessGroup,
    pick_cores,
    rss_bytes,
    worker_pids,
)
from bench.load.roundtrips import count_round_trips
from bench.load.scenarios import bulk, cluster, pipeline, reads, webhooks
from bench.load.settings import (
    CONCURRENCIES,
    HOT_CPFS,
    PG_ADMIN_URL,
    REDIS_URL,
    REPO,
    UPSTREAM_LATENCY_MS,
    Profile,
    say,
)
from bench.load.stack import (
    RATE_LIMIT_UNREACHABLE,
    SANDBOX_SEED,
    Sandbox,
    Server,
    app_env,
    start_app,
    start_sandbox,
)
from bench.load.wrk import Mode, Point, require_wrk, run_wrk, write_requests
from infra.sandbox.people import SyntheticPeople, lead_id_for

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["RssSampler", "Run"]


class RssSampler(threading.Thread):
    """Samples the RSS of Granian's workers every 200 ms; keeps the maximum per label."""

    def __init__(self, parent: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.parent = parent
        self.label = "startup"
        self.max_by_label: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            for pid in worker_pids(self.parent):
                rss = rss_bytes(pid)
                if rss is not None and rss > self.max_by_label.get(self.label, 0):
                    self.max_by_label[self.label] = rss

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()
        self.join(timeout=2)


class Run:
    """One benchmark run; :meth:`execute` returns the result document."""

    def __init__(
        self,
        profile: Profile,
        scenarios: Sequence[str],
        *,
        pin: bool,
        duration_s: float | None,
        parties: int | None,
        database: str | None,
        drop_db: bool,
    ) -> None:
        self.profile = profile
        self.selected = set(scenarios)
        self.cores: Cores = pick_cores(pin)
        self.duration_s = duration_s or profile.duration_s
        self.parties = parties or profile.parties
        self.database = database or (
            profile.database if parties is None else f"{profile.database}_{parties}"
        )
        self.drop_db = drop_db
        self.run_id = secrets.token_hex(4)
        self.key_prefix = f"c2s-bench:{self.run_id}:"
        self.work = Path(tempfile.mkdtemp(prefix="c2s-bench-"))
        # Fresh person indices per run: no lead id, CPF or contact is ever seen twice, so no
        # dedup, cache or stored dossier of an earlier run can flatter a figure.
        self._next_index = 10**9 + secrets.randbelow(2**40)
        self.result: dict[str, Any] = {
            "schema_version": 1,
            "mode": profile.name,
            "run_id": self.run_id,
            "config": {
                "duration_s": self.duration_s,
                "warmup_s": profile.warmup_s,
                "concurrencies": list(CONCURRENCIES),
                "parties": self.parties,
                "database": self.database,
                "pinning": self.cores.describe(),
                "rate_limits": f"ip, key and global at {RATE_LIMIT_UNREACHABLE}",
                "upstream_latency_ms": UPSTREAM_LATENCY_MS,
                "scenarios": sorted(self.selected),
            },
            "setup": {},
            "scenarios": {},
        }
        self.procs: ProcessGroup
        self.db: Database
        self.key = ""
        self.ids: Identifiers
        self.sandbox: Sandbox
        self.server: Server
        self.env: dict[str, str] = {}
        self.sampler: RssSampler | None = None
        self.hot_cpfs = [SyntheticPeople(SANDBOX_SEED).cpf_for(i) for i in range(HOT_CPFS)]

    # --- helpers for the scenarios -----------------------------------------------------------

    def fresh_indices(self, count: int) -> range:
        """``count`` person indices never used before in this run."""
        start = self._next_index
        self._next_index += count
        return range(start, start + count)

    def fresh_leads(self, count: int) -> list[str]:
        """``count`` sandbox lead ids never used before in this run."""
        return [lead_id_for(SANDBOX_SEED, i) for i in self.fresh_indices(count)]

    def requests_file(
        self, name: str, lines: Iterable[tuple[str, str] | tuple[str, str, str]]
    ) -> Path:
        """wrk's requests file ``<name>.txt`` in the run's work directory."""
        return write_requests(self.work / f"{name}.txt", lines)

    def wrk(
        self,
        requests_file: Path,
        concurrency: int,
        duration_s: float,
        mode: Mode,
        headers: dict[str, str],
        *,
        server: Server | None = None,
        cpus: str | None = None,
    ) -> Point:
        """One wrk point against the app (or ``server``), on the load core by default."""
        return run_wrk(
            self.procs,
            base_url=(server or self.server).url,
            requests_file=requests_file,
            concurrency=concurrency,
            duration_s=duration_s,
            mode=mode,
            headers=headers,
            cpus=cpus if cpus is not None else self.cores.load,
        )

    def auth(self) -> dict[str, str]:
        """The run's API key header."""
        return {"X-API-Key": self.key}

    def label(self, scenario: str) -> None:
        """Attribute the RSS samples from now on to ``scenario``."""
        if self.sampler is not None:
            self.sampler.label = scenario

    # --- set-up ------------------------------------------------------------------------------

    def _setup_database(self) -> None:
        self.db = asyncio.run(ensure_database(PG_ADMIN_URL, self.database, self.parties, 1, say))
        removed = asyncio.run(reset_run_state(self.db))
        say(f"database reset: {removed}")
        self.key = create_api_key(self.db, f"bench-{self.run_id}")
        self.ids = asyncio.run(sample_identifiers(self.db, self.profile.identifiers))
        self.result["setup"].update(
            {
                "database_reused": self.db.reused,
                "seed_seconds": self.db.seed_seconds,
                "identifiers": {
                    "cpf": len(self.ids.cpfs),
                    "email": len(self.ids.emails),
                    "phone": len(self.ids.phones),
                },
            }
        )

    def _start_stack(self) -> None:
        self.sandbox = start_sandbox(self.procs, cpus=self.cores.load)
        self.env = app_env(
            database_url=self.db.url,
            redis_url=REDIS_URL,
            key_prefix=self.key_prefix,
            sandbox_url=self.sandbox.url,
        )
        self.server = start_app(self.procs, self.env, workers=1, cpus=self.cores.server)
        self.sampler = RssSampler(self.server.proc.pid)
        self.sampler.start()

    def _warm_and_verify(self) -> None:
        """Cache the hot path's dossiers; check every kind of lookup answers 200."""
        for cpf in self.hot_cpfs:
            status, _ = http_request(
                "GET",
                f"{self.server.url}/api/v1/work/modules/all?documento={cpf}",
                headers=self.auth(),
            )
            if status != 200:
                raise RuntimeError(f"hot path warm-up answered {status}")
        for kind, values in (
            ("cpf", self.ids.cpfs),
            ("email", self.ids.emails),
            ("phone", self.ids.phones),
        ):
            for value in values[:5]:
                status, body = http_request(
                    "GET",
                    f"{self.server.url}/api/v1/contributor/customer?{kind}={quote(value)}",
                    headers=self.auth(),
                )
                sources = (
                    json.loads(body).get("metadata", {}).get("sources") if status == 200 else None
                )
                if sources != ["local_db"]:
                    raise RuntimeError(f"lookup by {kind} answered {status} {body[:200]!r}")

    def _count_round_trips(self) -> None:
        cpf, email, phone = self.ids.cpfs[0], self.ids.emails[0], self.ids.phones[0]
        self.result["setup"]["redis_round_trips"] = asyncio.run(
            count_round_trips(
                self.env,
                {
                    "hot": f"/api/v1/work/modules/all?documento={self.hot_cpfs[0]}",
                    "cpf": f"/api/v1/contributor/customer?cpf={cpf}",
                    "email": f"/api/v1/contributor/customer?email={quote(email)}",
                    "phone": f"/api/v1/contributor/customer?phone={phone}",
                    "health": "/health",
                },
                self.key,
            )
        )

    # --- the run -----------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        """Run the selected scenarios; always stop every process and clean up."""
        started = time.time()
        self.result["started_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Other work on the machine shows here: a load above the core count means noisy figures.
        self.result["loadavg_start"] = os.getloadavg()
        if self.cores.load is not None:
            # The runner itself (aiohttp bursts, sampling, pytest) stays off the server's core.
            os.sched_setaffinity(0, {int(self.cores.load)})
        with ProcessGroup(self.work / "logs") as procs:
            self.procs = procs
            try:
                self._execute()
            except Exception as exc:
                self.result["error"] = f"{type(exc).__name__}: {exc}"
                say(f"run failed: {self.result['error']} (logs in {self.work / 'logs'})")
                raise
            finally:
                if self.sampler is not None:
                    self.sampler.stop()
                procs.stop_all()
                self._cleanup()
                self.result["wall_s"] = round(time.time() - started, 1)
                self.result["loadavg_end"] = os.getloadavg()
        return self.result

    def _execute(self) -> None:
        require_wrk()
        if "micro" in self.selected:
            say("micro benchmarks (pytest-benchmark)")
            self.result["micro"] = run_micro(
                REPO, self.work, max_time_s=self.profile.micro_max_time_s
            )
        if not self.selected - {"micro"}:
            return
        self._setup_database()
        self._start_stack()
        self._warm_and_verify()
        self._count_round_trips()
        reads.run_read_paths(self)  # the bare route first: every ratio's denominator
        pipeline.run_pipeline(self)
        webhooks.run_webhooks(self)
        if "bulk" in self.selected:
            bulk.bulk_drain(self)
        if "hot" in self.selected:
            reads.fill_caches(self)
        self._record_memory()
        if "cluster" in self.selected:
            cluster.cluster_row(self)  # before two_workers, which stops the server
        if "two_workers" in self.selected:
            reads.two_workers(self)

    def _record_memory(self) -> None:
        """Stop the RSS sampler; the highest RSS per scenario goes to the result."""
        if self.sampler is None:
            return
        self.sampler.stop()
        per = {k: round(v / 2**20, 1) for k, v in self.sampler.max_by_label.items()}
        self.result["memory"] = {
            "per_scenario_mb": per,
            "max_rss_mb": max(per.values()) if per else None,
            "hot_rss_mb": per.get("hot"),
            "caches_full_rss_mb": per.get("caches_full"),
        }
        self.sampler = None

    def _cleanup(self) -> None:
        try:
            clean_redis(self.key_prefix)
            if hasattr(self, "db"):
                asyncio.run(reset_run_state(self.db))
                if self.drop_db:
                    asyncio.run(drop_database(PG_ADMIN_URL, self.db.name))
        except Exception as exc:  # cleanup must not hide the run's own error
            say(f"cleanup failed: {type(exc).__name__}: {exc}")
        # Request files go; the processes' logs stay for a post-mortem (a few KB at WARNING).
        for entry in self.work.iterdir():
            if entry.name != "logs":
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        self.result["logs"] = str(self.work / "logs")
