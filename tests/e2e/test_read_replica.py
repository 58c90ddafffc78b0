"""The app with ``DATABASE_READ_URL`` on a real streaming replica (ADR 0015).

Through HTTP: lookups are answered by the replica; a request that stored a customer reads it
back from the primary (read-your-writes) even while the replica's replay is paused; the replica
stopped under a load of lookups costs no request (no 5xx), the reads move to the primary and the
metrics say so; back, it serves again.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

import pytest
from litestar.testing import AsyncTestClient

from app.config import load_settings
from tests.support.factories import issue_key, new_cpf

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from litestar import Litestar

    from app.bootstrap import Services
    from tests.support.pg_replica import PgReplica

pytestmark = pytest.mark.integration

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


@pytest.fixture(scope="module")
async def replica_client(
    e2e_env: dict[str, str], database_url: str, pg_replica: PgReplica
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app reading from the session's replica, checked every 100 ms."""
    from app.main import create_app

    settings = load_settings(
        {
            **e2e_env,
            "REDIS_KEY_PREFIX": e2e_env["REDIS_KEY_PREFIX"] + "replica:",
            "DATABASE_READ_URL": pg_replica.url_for(database_url),
            "REPLICA_CHECK_S": "0.1",
            # Replay is paused on purpose below: within the bound the replica keeps serving.
            "REPLICA_MAX_LAG_S": "3600",
        }
    )
    async with AsyncTestClient(app=create_app(settings), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="replica", scopes="read,enrich")
    return plaintext


@pytest.fixture
async def replica(pg_replica: PgReplica) -> AsyncIterator[PgReplica]:
    """The replica running, replaying and caught up, before and after the test."""
    if not pg_replica.running():
        await asyncio.to_thread(pg_replica.start)
    await pg_replica.resume_replay()
    await pg_replica.wait_caught_up()
    yield pg_replica
    if not pg_replica.running():
        await asyncio.to_thread(pg_replica.start)
    await pg_replica.resume_replay()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def services(client: AsyncTestClient[Litestar]) -> Services:
    found: Services = client.app.state.services
    return found


async def metrics(client: AsyncTestClient[Litestar]) -> dict[str, float]:
    response = await client.get("/metrics")
    out: dict[str, float] = {}
    for line in response.text.splitlines():
        match = _LINE.match(line)
        if match:
            out[match[1] + (match[2] or "")] = float(match[3])
    return out


def reads(scraped: dict[str, float], target: str) -> float:
    return scraped.get(f'db_reads_total{{target="{target}"}}', 0.0)


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_a_request_reads_back_what_it_stored_while_other_lookups_use_the_replica(
    replica_client: AsyncTestClient[Litestar], replica: PgReplica, key: str
) -> None:
    routing = services(replica_client).reads
    await until(lambda: routing.serving)
    await replica.pause_replay()
    before = await metrics(replica_client)

    # One request: not stored (the replica looked) -> Work API -> stored -> read back.
    cpf = new_cpf()
    first = await replica_client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(key)
    )
    assert first.status_code == 200, first.text
    view = first.json()
    assert view["metadata"]["sources"] == ["work_api"]
    assert view["metadata"]["party_id"] is not None  # read back from the primary

    # A basic lead: looked up, enriched and stored, then loaded by id in the same request.
    lead_cpf = new_cpf()
    lead = await replica_client.post(
        "/api/v1/leads",
        json={
            "lead_id": "replica-lead",
            "personal_info": {"name": "Someone", "cpf": lead_cpf},
            "contact_info": {"phones": []},
        },
        headers=auth(key),
    )
    assert lead.status_code == 200, lead.text
    assert lead.json()["success"] is True
    assert lead.json()["data"]["customer"]["cpf_cnpj"] == lead_cpf

    after = await metrics(replica_client)
    # The first lookups: by CPF (customer), by CPF and by name (the lead).
    assert reads(after, "replica") - reads(before, "replica") == 3
    assert reads(after, "primary") - reads(before, "primary") >= 2  # the reads after a store
    assert after["db_replica_serving"] == 1

    # Replayed, the replica has both.
    await replica.resume_replay()
    await replica.wait_caught_up()
    again = await replica_client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(key)
    )
    assert again.json()["metadata"]["sources"] == ["local_db"]
    assert again.json()["metadata"]["party_id"] == view["metadata"]["party_id"]
    assert reads(await metrics(replica_client), "replica") - reads(after, "replica") == 1


async def test_replica_stopped_under_lookups_no_5xx_reads_move_to_the_primary_and_back(
    replica_client: AsyncTestClient[Litestar], replica: PgReplica, key: str
) -> None:
    routing = services(replica_client).reads
    cpfs = [new_cpf() for _ in range(4)]
    for cpf in cpfs:  # stored (through the app), then on the replica too
        stored = await replica_client.get(
            "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(key)
        )
        assert stored.status_code == 200, stored.text
    await replica.wait_caught_up()
    await until(lambda: routing.serving)
    statuses: list[int] = []
    sources: list[list[str]] = []
    stop = asyncio.Event()

    async def lookups(offset: int) -> None:
        n = offset
        while not stop.is_set():
            response = await replica_client.get(
                "/api/v1/contributor/customer",
                params={"cpf": cpfs[n % len(cpfs)]},
                headers=auth(key),
            )
            n += 1
            statuses.append(response.status_code)
            if response.status_code == 200:
                sources.append(response.json()["metadata"]["sources"])
            # The test client waits for the app's thread: let the test's other tasks run.
            await asyncio.sleep(0.001)

    load = [asyncio.create_task(lookups(i)) for i in range(2)]
    try:
        await asyncio.sleep(0.5)
        before = await metrics(replica_client)
        await asyncio.to_thread(replica.kill)  # pg_ctl stop -m immediate under the load
        await until(lambda: not routing.serving, timeout_s=5)
        await asyncio.sleep(0.5)
        down = await metrics(replica_client)
        await asyncio.to_thread(replica.start)
        await until(lambda: routing.serving)
        await asyncio.sleep(0.5)
        back = await metrics(replica_client)
    finally:
        stop.set()
        await asyncio.gather(*load)

    assert statuses
    assert set(statuses) == {200}, sorted(set(statuses))
    assert all(found == ["local_db"] for found in sources)  # every lookup found its customer
    assert before["db_replica_serving"] == 1
    assert down["db_replica_serving"] == 0
    assert down["db_replica_up"] == 0
    assert reads(down, "primary") > reads(before, "primary")
    assert back["db_replica_serving"] == 1
    assert back["db_replica_lag_seconds"] <= 3600
    assert reads(back, "replica") > reads(down, "replica")
