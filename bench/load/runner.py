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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import quote

import asyncpg
import msgspec

from bench.baseline_app import BARE_PATH
from bench.load import report
from bench.load.database import (
    Database,
    Identifiers,
    create_api_key,
    drop_database,
    ensure_database,
    reset_run_state,
    sample_identifiers,
)
from bench.load.micro import run_micro
from bench.load.procs import (
    Cores,
    ProcessGroup,
    cpu_seconds,
    install_signal_handlers,
    pick_cores,
    python,
    rss_bytes,
    worker_pids,
)
from bench.load.roundtrips import count_round_trips
from bench.load.stack import (
    RATE_LIMIT_UNREACHABLE,
    SANDBOX_C2S_TOKEN,
    SANDBOX_SEED,
    Sandbox,
    Server,
    app_env,
    start_app,
    start_sandbox,
)
from bench.load.sysinfo import machine_info
from bench.load.wrk import Mode, Point, require_wrk, run_wrk, write_requests
from infra.sandbox.people import SyntheticPeople, lead_id_for

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["FULL", "SCENARIOS", "SHORT", "Profile", "default_scenarios", "main", "run"]

Line: TypeAlias = tuple[str, str] | tuple[str, str, str]
Lines: TypeAlias = Callable[[str, int], list[Line]]
Counts: TypeAlias = dict[str, dict[str, int]]
Check: TypeAlias = Callable[[Counts, Counts, int], tuple[bool, str]]

REPO: Final = Path(__file__).resolve().parents[2]
RESULTS_DIR: Final = REPO / "bench" / "results"
PG_ADMIN_URL: Final = os.environ.get(
    "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL: Final = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCIES: Final = (1, 16, 64)
UPSTREAM_LATENCY_MS: Final = 400
LEADS_BATCH: Final = 64
# A point whose error rate exceeds this is reported invalid (and fails the gate).
MAX_ERROR_RATE: Final = 0.01
HOT_CPFS: Final = 64
_FRESH_LEADS_PER_SECOND: Final = 2000  # lead ids prepared per second of a /leads/process point

SCENARIOS: Final = (
    "micro",
    "health",
    "hot",
    "cpf",
    "email",
    "phone",
    "leads",
    "leads400",
    "webhook",
    "worker",
    "two_workers",
)


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how big a run is."""

    name: str
    duration_s: float
    warmup_s: float
    parties: int
    database: str
    identifiers: int
    worker_jobs: int
    worker_concurrency: tuple[int, ...]
    leads_batches: int
    micro_max_time_s: float


FULL: Final = Profile(
    name="full",
    duration_s=10,
    warmup_s=2,
    parties=1_000_000,
    database="c2s_bench",
    identifiers=1000,
    worker_jobs=3000,
    worker_concurrency=(4, 16),
    leads_batches=3,
    micro_max_time_s=1.0,
)
SHORT: Final = Profile(
    name="short",
    duration_s=2,
    warmup_s=1,
    parties=20_000,
    database="c2s_bench_short",
    identifiers=200,
    worker_jobs=600,
    worker_concurrency=(4,),
    leads_batches=2,
    micro_max_time_s=0.2,
)


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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


def _http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout_s: float = 30,
) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        url, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _event(lead_id: str, person_index: int, updated_at: str) -> dict[str, Any]:
    """A C2S ``on_create_lead`` event for the sandbox's person (Any: JSON)."""
    person = SyntheticPeople(SANDBOX_SEED).person(person_index)
    return {
        "id": lead_id,
        "hook_action": "on_create_lead",
        "attributes": {
            "updated_at": updated_at,
            "customer": {
                "name": person.name.title(),
                "email": person.email,
                "phone": person.mobile_e164,
            },
        },
    }


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

    # --- helpers -----------------------------------------------------------------------------

    def _fresh_indices(self, count: int) -> range:
        start = self._next_index
        self._next_index += count
        return range(start, start + count)

    def _fresh_leads(self, count: int) -> list[str]:
        return [lead_id_for(SANDBOX_SEED, i) for i in self._fresh_indices(count)]

    def _file(self, name: str, lines: Iterable[tuple[str, str] | tuple[str, str, str]]) -> Path:
        return write_requests(self.work / f"{name}.txt", lines)

    def _wrk(
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

    def _auth(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    # --- set-up ------------------------------------------------------------------------------

    def _setup_database(self) -> None:
        self.db = asyncio.run(ensure_database(PG_ADMIN_URL, self.database, self.parties, 1, _say))
        removed = asyncio.run(reset_run_state(self.db))
        _say(f"database reset: {removed}")
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
            status, _ = _http(
                "GET",
                f"{self.server.url}/api/v1/work/modules/all?documento={cpf}",
                headers=self._auth(),
            )
            if status != 200:
                raise RuntimeError(f"hot path warm-up answered {status}")
        for kind, values in (
            ("cpf", self.ids.cpfs),
            ("email", self.ids.emails),
            ("phone", self.ids.phones),
        ):
            for value in values[:5]:
                status, body = _http(
                    "GET",
                    f"{self.server.url}/api/v1/contributor/customer?{kind}={quote(value)}",
                    headers=self._auth(),
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

    # --- HTTP scenarios ----------------------------------------------------------------------

    def _http_scenario(
        self,
        name: str,
        *,
        title: str,
        path: str,
        lines: Lines,
        mode: Mode = "cycle",
        headers: dict[str, str] | None = None,
        check: Check | None = None,
    ) -> None:
        _say(f"{name}: {title}")
        block: dict[str, Any] = {"title": title, "path": path, "status": "ok", "points": {}}
        self.result["scenarios"][name] = block
        sent_headers = headers or {}
        if self.sampler is not None:
            self.sampler.label = name
        before = self.sandbox.counters()
        total = 0
        warm = self._wrk(
            self._file(f"{name}-warm", lines("warm", 16)),
            min(16, max(CONCURRENCIES)),
            self.profile.warmup_s,
            mode,
            sent_headers,
        )
        total += warm.requests
        for concurrency in CONCURRENCIES:
            requests_file = self._file(
                f"{name}-c{concurrency}", lines(f"c{concurrency}", concurrency)
            )
            # The denominator is measured right before, at the same concurrency: a machine
            # whose speed drifts (other work, turbo, thermal) moves both figures alike.
            pair = self._bare_point(concurrency) if name != "bare" else None
            workers = worker_pids(self.server.proc.pid)
            cpu_before = cpu_seconds(workers)
            point = self._wrk(requests_file, concurrency, self.duration_s, mode, sent_headers)
            cpu = cpu_seconds(workers) - cpu_before
            total += point.requests
            data = msgspec.to_builtins(point)
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
            block["points"][str(concurrency)] = data
            _say(
                f"  c={concurrency:<3} {point.rps:>9,.0f} req/s  p50 {point.p50_ms:7.2f} ms  "
                f"p99 {point.p99_ms:7.2f} ms  cpu {data.get('cpu_us_per_request', 0):6.0f} us/req"
                + (f"  (bare {pair.rps:,.0f} req/s, p50 {pair.p50_ms:.2f} ms)" if pair else "")
                + f"  errors {point.errors.total}"
                + (f"  INVALID: {data['invalid']}" if problems else "")
            )
        if check is not None:
            ok, text = check(before, self.sandbox.counters(), total)
            block["check_ok"] = ok
            block["check"] = text
            _say(f"  check: {text}")

    def _bare_point(self, concurrency: int, duration_s: float | None = None) -> Point:
        """The bare route at ``concurrency`` (a paired denominator)."""
        point = self._wrk(
            self._file("bare-pair", [("GET", BARE_PATH)]),
            concurrency,
            duration_s or self.duration_s,
            "cycle",
            {},
        )
        if point.error_rate > MAX_ERROR_RATE:
            raise RuntimeError(f"the bare route failed: error rate {point.error_rate:.1%}")
        return point

    @staticmethod
    def _delta(
        before: Counts,
        after: Counts,
        upstream: str,
        contains: str = "",
    ) -> int:
        def total(counts: Counts) -> int:
            return sum(v for route, v in counts.get(upstream, {}).items() if contains in route)

        return total(after) - total(before)

    def _check_no_upstream(self, what: str) -> Check:
        def check(before: Counts, after: Counts, total: int) -> tuple[bool, str]:
            calls = {u: self._delta(before, after, u) for u in ("c2s", "diretrix", "work_api")}
            ok = not any(calls.values())
            text = (
                f"verified: {total:,} requests, {what}, no upstream call"
                if ok
                else f"NOT verified: upstream calls during the run {calls}"
            )
            return ok, text

        return check

    def _check_leads(self, before: Counts, after: Counts, total: int) -> tuple[bool, str]:
        sent = self._delta(before, after, "c2s", "create_message")
        fetched = self._delta(before, after, "work_api")
        ok = sent >= total * (1 - MAX_ERROR_RATE)
        return ok, (
            f"{'verified' if ok else 'NOT verified'}: {total:,} leads, {sent:,} C2S messages "
            f"posted, {fetched:,} Work API fetches (each lead new: no dedup, no cache)"
        )

    def _lookup_lines(self, kind: str, values: list[str]) -> Lines:
        def lines(_tag: str, _concurrency: int) -> list[Line]:
            return [("GET", f"/api/v1/contributor/customer?{kind}={quote(v)}") for v in values]

        return lines

    def _leads_lines(self, tag: str, _concurrency: int) -> list[Line]:
        seconds = self.profile.warmup_s if tag == "warm" else self.duration_s
        count = int(seconds * _FRESH_LEADS_PER_SECOND) + 100
        return [("GET", f"/api/v1/leads/process?id={lead}") for lead in self._fresh_leads(count)]

    def _webhook_available(self) -> bool:
        index = self._fresh_indices(1)[0]
        body = json.dumps(_event(f"probe{self.run_id}", index, _now_iso())).encode()
        status, answer = _http(
            "POST",
            f"{self.server.url}/api/v1/webhooks/c2s",
            headers={"Content-Type": "application/json"},
            body=body,
        )
        if status in (404, 405):
            return False
        if status != 200:
            raise RuntimeError(f"webhook probe answered {status}: {answer[:300]!r}")
        return True

    def _webhook_scenario(self) -> None:
        if not self._webhook_available():
            self.result["scenarios"]["webhook"] = {
                "title": "Webhook acceptance (durable insert)",
                "path": "POST /api/v1/webhooks/c2s",
                "status": "pending: POST /api/v1/webhooks/c2s is not registered in the app yet",
            }
            _say("webhook: pending (route not registered)")
            return
        index = self._fresh_indices(1)[0]
        template = json.dumps(_event("@N@", index, "2026-01-01T12:00:00Z"), separators=(",", ":"))

        def lines(_tag: str, _concurrency: int) -> list[Line]:
            return [("POST", "/api/v1/webhooks/c2s", template)]

        def check(before: Counts, after: Counts, total: int) -> tuple[bool, str]:
            stored = asyncio.run(_count_events(self.db.url))
            ok = stored >= total
            return ok, (
                f"{'verified' if ok else 'NOT verified'}: {total:,} requests, {stored:,} events "
                "stored with their jobs"
            )

        self._http_scenario(
            "webhook",
            title="Webhook acceptance (durable insert of event + job)",
            path="POST /api/v1/webhooks/c2s",
            lines=lines,
            mode="counter",
            headers={"Content-Type": "application/json"},
            check=check,
        )

    # --- /leads/process with upstream latency ---------------------------------------------------

    def _leads_400(self) -> None:
        _say(f"leads400: {LEADS_BATCH} concurrent leads, Work API latency {UPSTREAM_LATENCY_MS} ms")
        if self.sampler is not None:
            self.sampler.label = "leads400"
        self.sandbox.set_latency("work_api", UPSTREAM_LATENCY_MS)
        walls: list[float] = []
        latencies: list[float] = []
        succeeded: list[int] = []
        try:
            for _ in range(self.profile.leads_batches):
                wall, each, ok = asyncio.run(
                    _burst(self.server.url, self.key, self._fresh_leads(LEADS_BATCH))
                )
                walls.append(wall * 1000)
                latencies += [x * 1000 for x in each]
                succeeded.append(ok)
                _say(f"  batch wall {wall * 1000:,.0f} ms, {ok}/{LEADS_BATCH} succeeded")
        finally:
            self.sandbox.clear_faults()
        self.result["leads_400ms"] = {
            "status": "ok",
            "latency_ms": UPSTREAM_LATENCY_MS,
            "batch": LEADS_BATCH,
            "walls_ms": [round(w, 1) for w in walls],
            "wall_ms": round(statistics.median(walls), 1),
            "per_lead_p50_ms": round(statistics.median(latencies), 1),
            "per_lead_max_ms": round(max(latencies), 1),
            "succeeded": min(succeeded),
        }

    # --- worker --------------------------------------------------------------------------------

    def _worker(self) -> None:
        _say(f"worker: drain {self.profile.worker_jobs} jobs, zero-latency upstreams")
        via = (
            "POST /api/v1/webhooks/c2s"
            if self._webhook_available()
            else ("PgEventStore.accept (the webhook route is not registered yet)")
        )
        runs: list[dict[str, Any]] = []
        for concurrency in self.profile.worker_concurrency:
            asyncio.run(_truncate_events(self.db.url))
            indices = list(self._fresh_indices(self.profile.worker_jobs))
            leads = [lead_id_for(SANDBOX_SEED, i) for i in indices]
            # Serving a virtual lead registers its person's contacts with the sandbox's
            # Diretrix, as a real lead's contacts are known there.
            asyncio.run(_register(self.sandbox.url, leads))
            stamp = _now_iso()
            events = [_event(lead, i, stamp) for lead, i in zip(leads, indices, strict=True)]
            if via.startswith("POST"):
                asyncio.run(_enqueue_http(self.server.url, events))
            else:
                asyncio.run(_enqueue_store(self.db.url, events))
            if self.sampler is not None:
                self.sampler.label = "worker"
            proc = self.procs.start(
                f"worker-{concurrency}",
                [python(), "-m", "bench.load.worker_proc", "--concurrency", str(concurrency)],
                env=self.env,
                cpus=self.cores.server,
            )
            try:
                drained = asyncio.run(
                    _drain(self.db.url, len(events), timeout_s=30 + len(events) / 20)
                )
            finally:
                self.procs.stop(proc)
            drained["concurrency"] = concurrency
            runs.append(drained)
            _say(
                f"  concurrency {concurrency}: {drained['jobs_per_s']:,.0f} jobs/s "
                f"({drained['completed']} completed, {drained['failed']} failed, "
                f"{drained['seconds']:.2f} s)"
            )
        asyncio.run(_truncate_events(self.db.url))
        # The machine's speed right now, for the worker's ratio (jobs/s per bare req/s).
        bare = self._bare_point(16)
        # The target is about the worker as it ships: its default concurrency, run first.
        first = runs[0]
        self.result["worker"] = {
            "status": "ok"
            if first["completed"] + first["failed"] == first["jobs"]
            else (f"timeout: {first['completed'] + first['failed']} of {first['jobs']} jobs done"),
            "enqueued_via": via,
            "concurrency": first["concurrency"],
            "jobs_per_s": first["jobs_per_s"],
            "completed": first["completed"],
            "failed": first["failed"],
            "runs": runs,
            "bare_rps_c16": bare.rps,
        }

    # --- two workers ---------------------------------------------------------------------------

    def _two_workers(self) -> None:
        _say("two_workers: Granian with 2 workers, unpinned")
        self.procs.stop(self.server.proc)
        all_cores = f"0-{(os.cpu_count() or 1) - 1}"
        server = start_app(self.procs, self.env, workers=2, cpus=all_cores)
        points: dict[str, dict[str, Any]] = {}
        for name, lines, headers in (
            ("bare", [("GET", BARE_PATH)], {}),
            ("health", [("GET", "/health")], {}),
            (
                "hot",
                [("GET", f"/api/v1/work/modules/all?documento={c}") for c in self.hot_cpfs],
                self._auth(),
            ),
        ):
            requests_file = self._file(f"2w-{name}", lines)
            self._wrk(
                requests_file,
                16,
                self.profile.warmup_s,
                "cycle",
                headers,
                server=server,
                cpus=all_cores,
            )
            points[name] = {}
            for concurrency in (16, 64):
                point = self._wrk(
                    requests_file,
                    concurrency,
                    self.duration_s,
                    "cycle",
                    headers,
                    server=server,
                    cpus=all_cores,
                )
                points[name][str(concurrency)] = msgspec.to_builtins(point)
                _say(f"  {name} c={concurrency}: {point.rps:,.0f} req/s p50 {point.p50_ms:.2f} ms")
        self.procs.stop(server.proc)
        self.result["two_workers"] = {"status": "ok", "points": points}

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
                _say(f"run failed: {self.result['error']} (logs in {self.work / 'logs'})")
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
            _say("micro benchmarks (pytest-benchmark)")
            self.result["micro"] = run_micro(
                REPO, self.work, max_time_s=self.profile.micro_max_time_s
            )
        if not self.selected - {"micro"}:
            return
        self._setup_database()
        self._start_stack()
        self._warm_and_verify()
        self._count_round_trips()

        def bare_lines(_tag: str, _concurrency: int) -> list[Line]:
            return [("GET", BARE_PATH)]

        self._http_scenario(
            "bare",
            title="Bare Litestar route, no middleware (denominator)",
            path=f"GET {BARE_PATH}",
            lines=bare_lines,
        )
        if "health" in self.selected:
            self._http_scenario(
                "health",
                title="GET /health (full middleware stack, no I/O)",
                path="GET /health",
                lines=lambda _t, _c: [("GET", "/health")],
            )
        if "hot" in self.selected:
            self._http_scenario(
                "hot",
                title="Cached Work API lookup (the hot path: key, rate limit, cache read)",
                path="GET /api/v1/work/modules/all?documento=<cpf>",
                lines=lambda _t, _c: [
                    ("GET", f"/api/v1/work/modules/all?documento={c}") for c in self.hot_cpfs
                ],
                headers=self._auth(),
                check=self._check_no_upstream(
                    f"{HOT_CPFS} CPFs, every answer from the Redis cache"
                ),
            )
        for kind, values in (
            ("cpf", self.ids.cpfs),
            ("email", self.ids.emails),
            ("phone", self.ids.phones),
        ):
            if kind in self.selected:
                self._http_scenario(
                    kind,
                    title=f"Customer lookup by {kind} (PostgreSQL hit)",
                    path=f"GET /api/v1/contributor/customer?{kind}=...",
                    lines=self._lookup_lines(kind, values),
                    headers=self._auth(),
                    check=self._check_no_upstream(f"{len(values)} seeded parties, PostgreSQL only"),
                )
        if "leads" in self.selected:
            self._http_scenario(
                "leads",
                title="/leads/process end to end, sandbox at zero latency (our own overhead)",
                path="GET /api/v1/leads/process?id=<fresh virtual lead>",
                lines=self._leads_lines,
                mode="unique",
                headers=self._auth(),
                check=self._check_leads,
            )
        if "leads400" in self.selected:
            self._leads_400()
        if "webhook" in self.selected:
            self._webhook_scenario()
            asyncio.run(_truncate_events(self.db.url))
        if "worker" in self.selected:
            self._worker()
        if self.sampler is not None:
            self.sampler.stop()
            per = {k: round(v / 2**20, 1) for k, v in self.sampler.max_by_label.items()}
            self.result["memory"] = {
                "per_scenario_mb": per,
                "max_rss_mb": max(per.values()) if per else None,
                "hot_rss_mb": per.get("hot"),
            }
            self.sampler = None
        if "two_workers" in self.selected:
            self._two_workers()

    def _cleanup(self) -> None:
        try:
            _clean_redis(self.key_prefix)
            if hasattr(self, "db"):
                asyncio.run(reset_run_state(self.db))
                if self.drop_db:
                    asyncio.run(drop_database(PG_ADMIN_URL, self.db.name))
        except Exception as exc:  # cleanup must not hide the run's own error
            _say(f"cleanup failed: {type(exc).__name__}: {exc}")
        # Request files go; the processes' logs stay for a post-mortem (a few KB at WARNING).
        for entry in self.work.iterdir():
            if entry.name != "logs":
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        self.result["logs"] = str(self.work / "logs")


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


async def _count_events(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM core.webhook_events"))
    finally:
        await conn.close()


async def _truncate_events(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE core.webhook_events, queue.pgqueuer, queue.pgqueuer_log")
    finally:
        await conn.close()


async def _burst(base_url: str, key: str, leads: list[str]) -> tuple[float, list[float], int]:
    """Fire one request per lead at once; return (wall, per-request latencies, successes)."""
    import aiohttp

    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # Open the connections first, so the batch measures requests, not TCP handshakes.
        async def ping() -> None:
            async with session.get(f"{base_url}/health") as answer:
                await answer.read()

        await asyncio.gather(*(ping() for _ in leads))

        async def one(lead: str) -> tuple[float, bool]:
            started = time.perf_counter()
            async with session.get(
                f"{base_url}/api/v1/leads/process", params={"id": lead}, headers=headers
            ) as answer:
                body = await answer.json()
            ok = answer.status == 200 and body.get("success") and not body.get("duplicate_request")
            return time.perf_counter() - started, bool(ok)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(lead) for lead in leads))
        wall = time.perf_counter() - started
    return wall, [r[0] for r in results], sum(1 for r in results if r[1])


async def _register(sandbox_url: str, leads: list[str]) -> None:
    import aiohttp

    gate = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {SANDBOX_C2S_TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def one(lead: str) -> None:
            async with (
                gate,
                session.get(f"{sandbox_url}/integration/leads/{lead}", headers=headers) as answer,
            ):
                if answer.status != 200:
                    raise RuntimeError(f"sandbox lead {lead} answered {answer.status}")
                await answer.read()

        await asyncio.gather(*(one(lead) for lead in leads))


async def _enqueue_http(base_url: str, events: list[dict[str, Any]]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), 100):
            chunk = events[start : start + 100]
            async with session.post(f"{base_url}/api/v1/webhooks/c2s", json=chunk) as answer:
                body = await answer.json()
                if answer.status != 200 or body.get("processed") != len(chunk):
                    raise RuntimeError(f"webhook answered {answer.status}: {body}")


async def _enqueue_store(url: str, events: list[dict[str, Any]]) -> None:
    from domain.webhooks import parse_webhook_document
    from infra.db.events import PgEventStore

    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = PgEventStore(pool)
        for start in range(0, len(events), 100):
            parsed = parse_webhook_document(events[start : start + 100])
            await store.accept(parsed.events)
    finally:
        await pool.close()


_DRAIN_SQL: Final = """
SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status NOT IN ('received', 'queued')) AS started,
       count(*) AS total
  FROM core.webhook_events
"""


async def _drain(url: str, jobs: int, *, timeout_s: float) -> dict[str, Any]:
    """Poll the events until all are completed or failed; time from first pick to last end."""
    conn = await asyncpg.connect(url)
    try:
        first: float | None = None
        deadline = time.monotonic() + timeout_s
        row: Any = None
        while time.monotonic() < deadline:
            row = await conn.fetchrow(_DRAIN_SQL)
            now = time.monotonic()
            if first is None and row["started"] > 0:
                first = now
            if row["completed"] + row["failed"] >= jobs:
                break
            await asyncio.sleep(0.05)
        last = time.monotonic()
        reasons = await conn.fetch(
            "SELECT error_message, count(*) AS n FROM core.webhook_events WHERE status = 'failed'"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
        )
    finally:
        await conn.close()
    seconds = last - (first if first is not None else last)
    done = (row["completed"] + row["failed"]) if row is not None else 0
    return {
        "jobs": jobs,
        "completed": row["completed"] if row is not None else 0,
        "failed": row["failed"] if row is not None else 0,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "failure_reasons": {r["error_message"]: r["n"] for r in reasons},
    }


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
    """Everything, except the informative 2-worker row in short mode (it gates nothing)."""
    if profile.name == "short":
        return tuple(s for s in SCENARIOS if s != "two_workers")
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
    _say(f"result written to {path} and {path.with_suffix('.md')}")
    return 0
