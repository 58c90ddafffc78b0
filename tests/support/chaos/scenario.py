"""Chaos scenario helpers: the app and worker processes, throwaway servers, the environment,
the workload and the observations.

Every scenario runs its own Granian app process (one worker) and, where events must be
processed, its own ``run_worker`` process, both through the launcher of
:mod:`tests.support.processes`; they reach PostgreSQL and Redis through
:class:`~tests.support.chaos.proxy.FaultProxy` instances, and the upstreams through the session's
sandbox. Scenarios that kill a server start a throwaway one of their own (:class:`RedisServer`,
:class:`PostgresCluster`); the machine's PostgreSQL and Redis are never stopped.

The short form (default) keeps each scenario under 60 s; ``CHAOS_LONG=1`` runs the long form
(longer phases, more load; see ``docs/chaos.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from domain.documents import cpf_check_digits
from tests.support.chaos.ledger import event_tag
from tests.support.chaos.load import LoadRun, Request, format_block
from tests.support.processes import (
    APP_FACTORY,
    ChildProcess,
    free_port,
    granian_argv,
    worker_argv,
)
from tests.support.sandbox import (
    C2S_TOKEN,
    DIRETRIX_PASS,
    DIRETRIX_USER,
    WEBHOOK_SECRET,
    WORK_API_TOKEN,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tests.support.chaos.load import Sample
    from tests.support.sandbox import SandboxAdmin

__all__ = [
    "LONG",
    "AppProcess",
    "PostgresCluster",
    "Processes",
    "Profile",
    "RedisServer",
    "WorkerProcess",
    "Workload",
    "delivery",
    "fresh_cpfs",
    "make_workload",
    "metric",
    "rate_limit_probe",
    "report",
    "scenario_env",
    "scrape_metrics",
    "via_port",
    "warm_up",
]

LONG = os.environ.get("CHAOS_LONG", "").strip() == "1"
PG_BIN = Path(os.environ.get("CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
_START_TIMEOUT_S = 60.0  # a loaded 2-core machine imports the app in 5-15 s


@dataclass(frozen=True, slots=True)
class Profile:
    """Short (CI) or long (on demand) form of the scenarios."""

    long: bool
    rate_per_s: float

    def seconds(self, short: float, long: float) -> float:
        """A phase length in this form."""
        return long if self.long else short


# --- processes ----------------------------------------------------------------------------------


class AppProcess(ChildProcess):
    """The app under Granian on a free port, with the Dockerfile's flags (one worker, uvloop,
    HTTP/1, backpressure 256, backlog 2048, 5 s head timeout) and a chosen
    ``--workers-kill-timeout``."""

    def __init__(self, env: Mapping[str, str], *, kill_timeout_s: int = 5) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = granian_argv(
            APP_FACTORY,
            self.port,
            kill_timeout_s=kill_timeout_s,
            extra_args=(
                "--backpressure",
                "256",
                "--backlog",
                "2048",
                "--http1-header-read-timeout",
                "5000",
            ),
        )
        super().__init__("app", argv, env)

    async def wait_healthy(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Wait for ``GET /health`` to answer 200 (fails the test after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return
                if not self.alive() or time.monotonic() > deadline:
                    pytest.fail(
                        f"app did not start (exit {self.proc.poll()}):\n{self.output(tail=60)}"
                    )
                await asyncio.sleep(0.1)


class WorkerProcess(ChildProcess):
    """``run_worker`` (``c2s-api worker``) in a subprocess, its metrics on a free port."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        concurrency: int = 4,
        lease_timeout_s: float = 5.0,
        grace_s: float = 5.0,
    ) -> None:
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        argv = worker_argv(
            concurrency=concurrency,
            lease_timeout_s=lease_timeout_s,
            grace_s=grace_s,
            metrics_port=self.metrics_port,
        )
        super().__init__("worker", argv, {**env, "LOG_LEVEL": "INFO"})

    async def wait_started(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Wait for the ``worker_started`` log line."""
        deadline = time.monotonic() + timeout_s
        while "worker_started" not in self.output(tail=400):
            if not self.alive() or time.monotonic() > deadline:
                pytest.fail(
                    f"worker did not start (exit {self.proc.poll()}):\n{self.output(tail=60)}"
                )
            await asyncio.sleep(0.1)


class Processes:
    """Starts the processes of one test; :meth:`stop_all` kills whatever is left."""

    def __init__(self) -> None:
        self.started: list[ChildProcess] = []

    def app(self, env: Mapping[str, str], *, kill_timeout_s: int = 5) -> AppProcess:
        """Start an app process."""
        app = AppProcess(env, kill_timeout_s=kill_timeout_s)
        self.started.append(app)
        return app

    def worker(self, env: Mapping[str, str], **options: Any) -> WorkerProcess:  # Any: kwargs
        """Start a worker process (``concurrency``, ``lease_timeout_s``, ``grace_s``)."""
        worker = WorkerProcess(env, **options)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        """Kill every process group started here."""
        for process in self.started:
            process.stop()


# --- throwaway servers ---------------------------------------------------------------------------


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A throwaway ``redis-server`` (no persistence) that a scenario may kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Direct URL (not through a proxy)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it on its port and wait for ``PING``."""
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not _answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown, everything in memory is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class PostgresCluster:
    """A throwaway PostgreSQL 15 cluster in a temporary directory (``initdb``/``pg_ctl``).

    initdb refuses to run as root, so as root every command runs as the ``postgres`` user.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def url(self, database: str = "postgres") -> str:
        """Direct URL (not through a proxy)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout_s: float = 60.0) -> None:
        result = subprocess.run(
            [*self._as_owner, *argv],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            pytest.fail(f"{Path(argv[0]).name} failed ({result.returncode}):\n{output[-2000:]}")

    def init(self) -> None:
        """``initdb`` (trust auth, no fsync: a test cluster)."""
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (set CHAOS_PG_BIN)")
        if self._as_owner:
            shutil.chown(self.root, user="postgres")
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` (``fast`` terminates sessions; ``immediate`` crashes)."""
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        """The postmaster is up."""
        return (self.data / "postmaster.pid").exists()


# --- the scenario's environment -------------------------------------------------------------------


def via_port(url: str, port: int) -> str:
    """``url`` with its port replaced (to go through a proxy)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def scenario_env(
    *,
    database_url: str,
    redis_url: str,
    prefix: str,
    upstreams_url: str,
    **overrides: str,
) -> dict[str, str]:
    """Environment of a scenario's app and worker (``overrides`` by variable name).

    ``upstreams_url`` is the sandbox serving C2S, Diretrix and the Work API.
    """
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
        "C2S_BASE_URL": upstreams_url,
        "C2S_TOKEN": C2S_TOKEN,
        "DIRETRIX_BASE_URL": upstreams_url,
        "DIRETRIX_USER": DIRETRIX_USER,
        "DIRETRIX_PASS": DIRETRIX_PASS,
        "WORK_API_BASE_URL": upstreams_url,
        "WORK_API_TOKEN": WORK_API_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        # The load comes from one address with one key: only the key tier binds, well above the
        # offered load (the rate-limit probes exceed it on purpose).
        "RATE_LIMIT_IP": "",
        "RATE_LIMIT_KEY": "200/second",
        "RATE_LIMIT_GLOBAL": "",
        # Time is compressed here: retries of events failed under faults must come back within
        # the ledger's drain (the production backoff reaches 80 s by the sixth attempt; an event
        # failed 8 times under faults waited up to 64 s with only the base compressed).
        "WORKER_RETRY_BASE_S": "0.5",
        "WORKER_RETRY_MAX_S": "4",
        **overrides,
    }


# --- the workload ----------------------------------------------------------------------------


def delivery(lead: dict[str, Any], when: dt.datetime, updated_at: str | None = None) -> Request:
    """A C2S webhook delivery of ``lead``'s event at ``when``.

    Args:
        lead: A sandbox lead document (``lead_id``, ``customer``).
        when: The event's instant (its dedupe key, with the lead).
        updated_at: How the body writes the instant (default: RFC 3339 in UTC).
    """
    body = {
        "id": lead["lead_id"],
        "hook_action": "on_update_lead",
        "attributes": {
            "updated_at": updated_at or when.isoformat().replace("+00:00", "Z"),
            "customer": lead["customer"],
        },
    }
    return Request(
        "webhook",
        "POST",
        "/api/v1/webhooks/c2s",
        {"X-Webhook-Token": WEBHOOK_SECRET},
        body,
        event_tag(lead["lead_id"], when),
    )


@dataclass
class Workload:
    """The steady mix: hot-path reads, customer lookups, webhook deliveries (some repeated).

    Out of every 20 requests: 10 cached Work API reads, 5 customer lookups by CPF, 4 new webhook
    events and 1 redelivery of the latest event (a duplicate: must not cause a second message).
    Every new event is a distinct ``(lead, updated_at)``, the leads taken in turn.
    """

    key: str
    hot_cpfs: list[str]
    lookup_cpfs: list[str]
    leads: list[dict[str, Any]]  # Any: the sandbox's lead documents
    base_time: dt.datetime
    sent: dict[int, Request] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        """Headers of an authenticated request."""
        return {"X-API-Key": self.key}

    def hot(self, i: int) -> Request:
        """A cached hot-path read."""
        cpf = self.hot_cpfs[i % len(self.hot_cpfs)]
        return Request("hot", "GET", f"/api/v1/work/modules/all?documento={cpf}", self.auth)

    def lookup(self, i: int) -> Request:
        """A customer lookup (PostgreSQL first)."""
        cpf = self.lookup_cpfs[i % len(self.lookup_cpfs)]
        return Request("lookup", "GET", f"/api/v1/contributor/customer?cpf={cpf}", self.auth)

    def webhook(self, i: int) -> Request:
        """A new webhook event (``i`` makes it unique), for the next lead in turn."""
        lead = self.leads[len(self.sent) % len(self.leads)]
        request = delivery(lead, self.base_time + dt.timedelta(seconds=i))
        self.sent[i] = request
        return request

    def redelivery(self, i: int) -> Request:
        """The latest event sent again (or a new one if none was sent yet)."""
        if not self.sent:
            return self.webhook(i)
        return self.sent[max(self.sent)]

    def request(self, i: int) -> Request:
        """Request ``i`` of the steady mix."""
        slot = i % 20
        if slot < 10:
            return self.hot(i)
        if slot < 15:
            return self.lookup(i)
        if slot < 19:
            return self.webhook(i)
        return self.redelivery(i)

    def reads_only(self, i: int) -> Request:
        """Request ``i`` of a read-only mix (2 hot reads per lookup)."""
        return self.lookup(i) if i % 3 == 2 else self.hot(i)


async def make_workload(
    admin: SandboxAdmin,
    key: str,
    *,
    first_person: int,
    hot: int = 30,
    lookups: int = 12,
    leads: int = 30,
    cold_leads: bool = False,
) -> Workload:
    """Sandbox people and leads for a scenario (fresh lead ids every run).

    Hot reads cover the first ``hot`` people, lookups the next ``lookups``. Leads belong to the
    hot people (their dossiers are cached by the warm-up, so jobs are quick) unless
    ``cold_leads``: then each lead is a person of its own whom nothing has looked up yet (every
    job resolves the contacts in Diretrix and fetches the dossier from the Work API).
    """

    async def call(method: str, path: str, body: Any = None) -> Any:  # Any: JSON
        async with admin.session.request(method, admin.base_url + path, json=body) as answer:
            assert answer.status < 300, (path, answer.status, await answer.text())
            return await answer.json()

    async def cpf_of(index: int) -> str:
        cpf: str = (await call("GET", f"/_sandbox/people/{index}"))["cpf"]
        return cpf

    hot_people = range(first_person, first_person + hot)
    lookup_people = range(hot_people.stop, hot_people.stop + lookups)
    lead_people = (
        range(lookup_people.stop, lookup_people.stop + leads)
        if cold_leads
        else [hot_people[i % hot] for i in range(leads)]
    )
    gate = asyncio.Semaphore(8)

    async def lead_for(index: int) -> dict[str, Any]:  # Any: the sandbox's lead document
        async with gate:
            lead: dict[str, Any] = await call(
                "POST", "/_sandbox/leads", {"person_index": index, "lead_id": uuid.uuid4().hex}
            )
            return lead

    created = await asyncio.gather(*(lead_for(index) for index in lead_people))
    hot_cpfs = await asyncio.gather(*(cpf_of(index) for index in hot_people))
    lookup_cpfs = await asyncio.gather(*(cpf_of(index) for index in lookup_people))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return Workload(
        key=key,
        hot_cpfs=list(hot_cpfs),
        lookup_cpfs=list(lookup_cpfs),
        leads=list(created),
        base_time=now - dt.timedelta(days=1),
    )


async def warm_up(app_url: str, workload: Workload) -> None:
    """Fill the dossier cache and the party store for the workload's CPFs (all must answer 200)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        gate = asyncio.Semaphore(4)

        async def get(request: Request) -> tuple[str, int]:
            async with gate, session.get(app_url + request.path, headers=request.headers) as r:
                await r.read()
                return request.path, r.status

        results = await asyncio.gather(
            *(get(workload.hot(i)) for i in range(len(workload.hot_cpfs))),
            *(get(workload.lookup(i)) for i in range(len(workload.lookup_cpfs))),
        )
    failed = [(path.split("?")[0], status) for path, status in results if status != 200]
    assert not failed, f"warm-up failed: {failed}"


def fresh_cpfs(count: int) -> list[str]:
    """``count`` random valid CPFs, none cached anywhere yet (Work API cache misses)."""
    rng = random.Random(uuid.uuid4().int)
    out: list[str] = []
    while len(out) < count:
        first = f"{rng.randrange(10**8, 10**9):09d}"
        if len(set(first)) > 1:
            out.append(first + cpf_check_digits(first))
    return out


async def rate_limit_probe(app_url: str, key: str, *, requests: int = 200) -> list[Sample]:
    """A burst on one key, faster than its quota: the limiter must answer 429s (and no 5xx).

    Cheap requests (an unknown customer id: one indexed query, 404) so the burst measures the
    limiter rather than the backends.
    """
    headers = {"X-API-Key": key}

    def unknown_customer(i: int) -> Request:
        return Request("probe", "GET", f"/api/v1/customers/{uuid.uuid4()}", headers)

    run = LoadRun(
        app_url, unknown_customer, rate_per_s=2000.0, duration_s=requests / 2000.0, concurrency=16
    )
    return await run.run()


# --- observations ------------------------------------------------------------------------------

_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


async def scrape_metrics(base_url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """``/metrics`` of an app or a worker as ``{"name{labels}": value}`` (empty when it does not
    answer)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(f"{base_url}/metrics") as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                out[match[1] + (match[2] or "")] = float(match[3])
    return out


def metric(metrics: Mapping[str, float], name: str, /, **labels: str) -> float | None:
    """The value of ``name`` with exactly these labels, if scraped."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if got == wanted:
            return value
    return None


def report(title: str, sections: Mapping[str, Sequence[Sample]], *extra: str) -> str:
    """Print the scenario's figures and ledger block (visible with ``-s``) and return it."""
    block = format_block(title, sections, *extra)
    print("\n" + block, flush=True)
    return block
