"""Scale-out: 3 API processes (one Granian worker each, as 3 VMs) and 2 ``c2s-api worker``
processes on a Redis Cluster (ADR 0014) and a PostgreSQL primary with a streaming read replica
(ADR 0015; docs/scaling.md).

Every request of a flow goes to another process, so what must be shared is shown shared: lead
locks and replays, the dossier cache (one Work API call), idempotency records, the webhook queue
(one message per lead whatever worker runs it) and one per-key rate limit across the fleet;
every process reads its lookups from the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.support.factories import issue_key
from tests.support.polling import wait_until
from tests.support.processes import ChildProcess, granian_server, worker_argv
from tests.support.sandbox import PEOPLE, WEBHOOK_SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import asyncpg

    from tests.support.pg_replica import PgReplica
    from tests.support.sandbox import SandboxAdmin
    from tests.support.topology import RedisClusterTopology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_PROCESSES = 3
WORKERS = 2
QUOTA = 120  # per key and hour, across the fleet
PROBLEM = "application/problem+json"


class Fleet:
    """The API processes' base URLs; :meth:`next` walks them round robin."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._cycle = itertools.cycle(urls)

    def next(self) -> str:
        return next(self._cycle)


@pytest.fixture(scope="module")
def fleet(
    e2e_env: dict[str, str],
    redis_cluster_topology: RedisClusterTopology,
    pg_replica: PgReplica,
) -> Iterator[Fleet]:
    env = {
        **os.environ,
        **e2e_env,
        "REDIS_URL": redis_cluster_topology.url,
        # Lookups read from a streaming replica while it serves (ADR 0015).
        "DATABASE_READ_URL": pg_replica.url_for(e2e_env["DATABASE_URL"]),
        "REDIS_KEY_PREFIX": f"{e2e_env['REDIS_KEY_PREFIX']}scale-{uuid.uuid4().hex[:6]}:",
        "RATE_LIMIT_KEY": f"{QUOTA}/hour",
        "DB_POOL_MAX": "5",
        "LOG_LEVEL": "WARNING",
    }
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(
                granian_server("app.main:create_app", env=env, ready_path="/health/ready")
            )
            for _ in range(API_PROCESSES)
        ]
        for _ in range(WORKERS):
            worker = ChildProcess(
                "worker", worker_argv(concurrency=4, lease_timeout_s=30, grace_s=5), env
            )
            stack.callback(worker.stop)
        time.sleep(1)  # every process past its start-up (grants, listeners)
        yield Fleet(urls)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: every request on a new connection, to whichever process the URL names.
    connector = aiohttp.TCPConnector(limit=32, force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


@pytest.fixture(scope="module")
async def key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="scale", scopes="read,enrich")
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_a_lead_is_processed_once_and_replayed_by_another_process(
    fleet: Fleet, http: aiohttp.ClientSession, sandbox: SandboxAdmin, key: str
) -> None:
    lead = await sandbox.create_lead(person_index=31)
    path = f"/api/v1/leads/process?id={lead['lead_id']}"
    status, first = await get_json(http, fleet.urls[0] + path, auth(key))
    assert status == 200
    assert first["success"] is True, first
    assert first["cpfs_processed"] == [lead["cpf"]]
    for url in fleet.urls[1:]:
        status, again = await get_json(http, url + path, auth(key))
        assert status == 200
        assert again == {**first, "duplicate_request": True}  # the replay is shared
    assert len(await sandbox.messages(lead["lead_id"])) == 1


async def test_a_concurrent_duplicate_on_another_process_is_blocked(
    fleet: Fleet, http: aiohttp.ClientSession, sandbox: SandboxAdmin, key: str
) -> None:
    lead = await sandbox.create_lead(person_index=32)
    await sandbox.set_faults("work_api", latency_ms=600)
    path = f"/api/v1/leads/process?id={lead['lead_id']}"

    async def later(url: str) -> tuple[int, Any]:
        await asyncio.sleep(0.2)
        return await get_json(http, url + path, auth(key))

    (s1, first), (s2, blocked) = await asyncio.gather(
        get_json(http, fleet.urls[0] + path, auth(key)), later(fleet.urls[1])
    )
    assert s1 == s2 == 200
    assert first["success"] is True
    assert blocked["duplicate_request"] is True
    assert blocked["message"].startswith("Lead already being processed")
    assert len(await sandbox.messages(lead["lead_id"])) == 1


async def test_the_dossier_cache_is_shared_by_every_process(
    fleet: Fleet, http: aiohttp.ClientSession, sandbox: SandboxAdmin, key: str
) -> None:
    cpf = PEOPLE.cpf_for(33)
    bodies = []
    for url in fleet.urls:
        async with http.get(
            f"{url}/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
        ) as response:
            assert response.status == 200
            bodies.append(await response.read())
    assert bodies == [PEOPLE.dossier_json(cpf)] * API_PROCESSES
    calls = (await sandbox.counters()).get("work_api", {})
    assert sum(calls.values()) == 1  # one paid call for the whole fleet


async def test_every_process_reads_its_lookups_from_the_replica(
    fleet: Fleet, http: aiohttp.ClientSession, key: str
) -> None:
    cpf = PEOPLE.cpf_for(34)
    for url in fleet.urls * 2:
        async with http.get(
            f"{url}/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(key)
        ) as response:
            assert response.status == 200
            assert (await response.json())["personal_info"]["cpf"] == cpf
    for url in fleet.urls:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        replica_reads = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("db_reads_total") and 'target="replica"' in line
        ]
        assert sum(replica_reads) >= 1, f"{url} read nothing from the replica"


async def test_bad_input_is_a_problem_on_every_process(
    fleet: Fleet, http: aiohttp.ClientSession, key: str
) -> None:
    for url in fleet.urls:
        async with http.get(
            f"{url}/api/v1/work/modules/all", params={"documento": "12345678900"}, headers=auth(key)
        ) as response:
            assert response.status == 400
            assert response.headers["content-type"].startswith(PROBLEM)
            body = await response.json(content_type=None)
            assert body["errors"][0]["field"] == "cpf"


async def test_an_idempotency_key_is_honoured_by_every_process(
    fleet: Fleet, http: aiohttp.ClientSession, key: str
) -> None:
    headers = {**auth(key), "Idempotency-Key": f"scale-{uuid.uuid4().hex}"}
    cpf = PEOPLE.person(34).cpf
    answers = []
    for url in fleet.urls:
        async with http.post(f"{url}/api/v1/enrich", json={"cpf": cpf}, headers=headers) as r:
            answers.append((r.status, r.headers.get("idempotent-replayed"), await r.read()))
    assert answers[0][0] == 200
    assert answers[0][1] is None
    for status, replayed, body in answers[1:]:
        assert (status, replayed, body) == (200, "true", answers[0][2])
    async with http.post(
        f"{fleet.next()}/api/v1/enrich", json={"cpf": PEOPLE.cpf_for(35)}, headers=headers
    ) as other:
        assert other.status == 422


async def test_webhooks_spread_over_processes_give_one_message_per_lead(
    fleet: Fleet, http: aiohttp.ClientSession, sandbox: SandboxAdmin, db: asyncpg.Pool
) -> None:
    leads = [await sandbox.create_lead(person_index=40 + i) for i in range(6)]
    headers = {"X-Webhook-Token": WEBHOOK_SECRET}
    deliveries = []
    for lead in leads:
        event = {
            "id": lead["lead_id"],
            "hook_action": "on_update_lead",
            "attributes": {
                "updated_at": "2025-11-26 07:00:00.000 -0300",
                "customer": lead["customer"],
            },
        }
        deliveries += [(url, event) for url in fleet.urls]  # each lead to every process

    async def deliver(url: str, event: dict[str, Any]) -> int:
        async with http.post(f"{url}/api/v1/webhooks/c2s", json=event, headers=headers) as r:
            return r.status

    statuses = await asyncio.gather(*(deliver(url, event) for url, event in deliveries))
    assert set(statuses) == {200}

    async def all_done() -> bool:
        done = await db.fetchval(
            "SELECT count(*) FROM core.webhook_events WHERE lead_id = ANY($1::text[]) "
            "AND status = 'completed'",
            [lead["lead_id"] for lead in leads],
        )
        return bool(done == len(leads))

    await wait_until(all_done, timeout_s=60, what="the two workers to complete every event")
    for lead in leads:
        assert len(await sandbox.messages(lead["lead_id"])) == 1


async def test_one_per_key_limit_is_shared_by_the_fleet(
    fleet: Fleet, http: aiohttp.ClientSession, database_url: str
) -> None:
    limited_key, _ = await issue_key(database_url, tenant="scale-rl", scopes="read")
    statuses: list[int] = []

    async def one() -> None:
        url = f"{fleet.next()}/api/v1/customers/{uuid.uuid4()}"
        async with http.get(url, headers={"X-API-Key": limited_key}) as response:
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1

    await asyncio.gather(*(one() for _ in range(QUOTA * 2)))
    served, limited = statuses.count(404), statuses.count(429)
    errors = [await _storage_errors(http, url) for url in fleet.urls]
    assert served + limited == QUOTA * 2, sorted(set(statuses))
    assert abs(served - QUOTA) <= QUOTA * 0.05, (served, limited, errors)


async def _storage_errors(http: aiohttp.ClientSession, url: str) -> list[str]:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return [
        line
        for line in text.splitlines()
        if line.startswith(("rate_limit_storage_errors_total", "rate_limit_degraded"))
    ]
