"""Reads on a real streaming replica of the test server (ADR 0015), and their fallbacks.

The replica (``pg_replica``, one per session) holds the session database by streaming. A party
written to the primary while the replica's replay is paused is the witness of who answered: the
replica does not have it yet, the primary does.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg
import pytest

from domain.dossier import decode_dossier
from infra.db.pool import create_pool
from infra.db.replica import ReadRouting
from infra.db.repository import PgPartyRepository
from tests.support.chaos.proxy import FaultProxy
from tests.support.chaos.scenario import via_port
from tests.support.db import DbSettings, database_url_for
from tests.support.factories import dossier_payload, encode, new_cpf

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from infra.db.replica import ReadTarget
    from tests.support.pg_replica import PgReplica

pytestmark = pytest.mark.integration


class ReadLog:
    """A listener of the routing: which server answered each read, and the last health."""

    def __init__(self) -> None:
        self.reads: list[ReadTarget] = []
        self.serving: list[bool] = []

    def read(self, target: ReadTarget) -> None:
        self.reads.append(target)

    def health(self, *, up: bool, lag_s: float | None, serving: bool) -> None:
        self.serving.append(serving)

    def take(self) -> list[ReadTarget]:
        reads, self.reads = self.reads, []
        return reads


@pytest.fixture
async def replica(pg_replica: PgReplica, database_url: str) -> AsyncIterator[PgReplica]:
    """The session's replica, running, replaying and caught up; left so after the test."""
    if not pg_replica.running():
        pg_replica.start()
    await pg_replica.resume_replay()
    await pg_replica.wait_caught_up()
    yield pg_replica
    if not pg_replica.running():
        await asyncio.to_thread(pg_replica.start)
    await pg_replica.resume_replay()


class World:
    def __init__(self, routing: ReadRouting, repo: PgPartyRepository, log: ReadLog) -> None:
        self.routing = routing
        self.repo = repo
        self.log = log

    async def store_elsewhere(self, cpf: str) -> None:
        """Store a dossier for ``cpf`` in a task of its own (another request): the caller's
        reads are not marked as following a write."""
        raw = encode(dossier_payload(cpf, name="REPLICA TESTE"))
        await asyncio.create_task(self.repo.store_dossier(cpf, decode_dossier(raw), raw, None))


@pytest.fixture
async def world(database_url: str, replica: PgReplica) -> AsyncIterator[World]:
    primary = await create_pool(DbSettings(database_url, pool_max=4))
    secondary = await create_pool(
        DbSettings(database_url, pool_max=4), url=replica.url_for(database_url)
    )
    log = ReadLog()
    routing = ReadRouting(
        primary, secondary, acquire_timeout=2.0, max_lag_s=3600.0, check_s=0.1, listener=log
    )
    try:
        yield World(routing, PgPartyRepository(primary, reads=routing), log)
    finally:
        await secondary.close()
        await primary.close()


async def _until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_lookups_are_answered_by_the_replica_while_it_serves(
    world: World, replica: PgReplica
) -> None:
    known = new_cpf()
    await world.store_elsewhere(known)
    await replica.wait_caught_up()
    assert await world.routing.check()

    found = await world.repo.find_by_cpf(known)
    assert found is not None
    assert world.log.take() == ["replica"]

    # Replay paused: a party stored now is on the primary only. The replica answers, so the
    # lookup does not see it (within the lag bound, a replica is allowed to be behind).
    await replica.pause_replay()
    unseen = new_cpf()
    await world.store_elsewhere(unseen)
    assert await world.routing.check()
    assert await world.repo.find_by_cpf(unseen) is None
    assert await world.repo.search_by_name("REPLICA TESTE", limit=5)
    assert world.log.take() == ["replica", "replica"]

    # Writes, and the reads that decide them, stay on the primary.
    assert await world.repo.find_enrichment(unseen) is not None

    await replica.resume_replay()
    await replica.wait_caught_up()
    assert await world.repo.find_by_cpf(unseen) is not None
    assert world.log.take() == ["replica"]


async def test_after_a_store_the_same_task_reads_the_primary(
    world: World, replica: PgReplica
) -> None:
    assert await world.routing.check()
    await replica.pause_replay()
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf, name="LEITURA PROPRIA"))

    async def request() -> str | None:
        stored = await world.repo.store_dossier(cpf, decode_dossier(raw), raw, None)
        found = await world.repo.find_by_cpf(cpf)
        party = await world.repo.get_party(stored.party_id)
        assert party is not None
        return None if found is None else str(found.party.id)

    assert await asyncio.create_task(request()) is not None
    assert world.log.take() == ["primary", "primary"]
    # Another request (task) still reads the replica, which does not have it yet.
    assert await world.repo.find_by_cpf(cpf) is None
    assert world.log.take() == ["replica"]


async def test_a_lagging_replica_stops_serving_until_it_catches_up(
    world: World, replica: PgReplica
) -> None:
    world.routing.max_lag_s = 0.5
    await _until(world.routing.check)  # the shared server's other writers may be streaming
    await replica.pause_replay()
    cpf = new_cpf()
    await world.store_elsewhere(cpf)

    async def lagging() -> bool:
        return not await world.routing.check()

    await _until(lagging)
    assert world.routing.up
    assert world.routing.lag_s is not None
    assert world.routing.lag_s > 0.5
    assert await world.repo.find_by_cpf(cpf) is not None  # the primary answered
    assert world.log.take() == ["primary"]

    await replica.resume_replay()
    await _until(world.routing.check)
    assert world.routing.lag_s is not None
    assert world.routing.lag_s <= 0.5
    assert await world.repo.find_by_cpf(cpf) is not None
    assert world.log.take() == ["replica"]


async def test_a_replica_stopped_under_lookups_fails_no_read_and_serves_again_when_back(
    world: World, replica: PgReplica
) -> None:
    cpfs = [new_cpf() for _ in range(5)]
    for cpf in cpfs:
        await world.store_elsewhere(cpf)
    await replica.wait_caught_up()
    failures: list[BaseException] = []
    missing: list[str] = []
    stop = asyncio.Event()

    async def lookups() -> None:
        n = 0
        while not stop.is_set():
            cpf = cpfs[n % len(cpfs)]
            n += 1
            try:
                if await world.repo.find_by_cpf(cpf) is None:
                    missing.append(cpf)
            except Exception as exc:  # every failure is the test's failure
                failures.append(exc)
            await asyncio.sleep(0.005)

    async with world.routing.running():
        await _until(lambda: _true(world.routing.serving))
        load = [asyncio.create_task(lookups()) for _ in range(4)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(replica.kill)  # pg_ctl stop -m immediate, mid-load
        await _until(lambda: _true(not world.routing.serving), timeout_s=5)
        await asyncio.sleep(0.5)
        during = world.log.take()
        await asyncio.to_thread(replica.start)
        await _until(lambda: _true(world.routing.serving), timeout_s=20)
        world.log.take()
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*load)
        after = world.log.take()

    assert failures == []
    assert missing == []
    assert "replica" in during
    assert during[-1] == "primary"
    assert False in world.log.serving
    assert after
    assert set(after) == {"replica"}


async def _true(value: bool) -> bool:
    return value


async def test_a_read_cut_or_refused_on_the_replica_is_answered_by_the_primary(
    database_url: str, replica: PgReplica
) -> None:
    primary = await create_pool(DbSettings(database_url, pool_max=2))
    log = ReadLog()
    with FaultProxy("replica", "127.0.0.1", replica.port) as proxy:
        secondary = await create_pool(
            DbSettings(database_url, pool_max=2),
            url=via_port(replica.url_for(database_url), proxy.port),
        )
        routing = ReadRouting(primary, secondary, max_lag_s=3600.0, listener=log)
        repo = PgPartyRepository(primary, reads=routing)
        try:
            cpf = new_cpf()
            raw = encode(dossier_payload(cpf, name="CORTADO NO MEIO"))
            await asyncio.create_task(repo.store_dossier(cpf, decode_dossier(raw), raw, None))
            await replica.wait_caught_up()
            assert await routing.check()

            # Reset mid-query: the replica's answer is held by the proxy, then the connection
            # is aborted with an RST.
            await proxy.set_mode("latency", latency_ms=800)
            lookup = asyncio.create_task(repo.find_by_cpf(cpf))
            await asyncio.sleep(0.3)
            await proxy.set_mode("reset")
            found = await lookup
            assert found is not None
            assert found.party.full_name == "CORTADO NO MEIO"
            assert log.take() == ["primary"]
            assert not routing.serving  # until a check finds it healthy

            await proxy.set_mode("pass")
            assert await routing.check()
            assert await repo.find_by_cpf(cpf) is not None
            assert log.take() == ["replica"]

            # Refused (the replica's server gone): the same.
            await proxy.set_mode("refuse")
            assert await repo.find_by_cpf(cpf) is not None
            assert log.take() == ["primary"]
            assert not await routing.check()
            assert not routing.up
        finally:
            await secondary.close()
            await primary.close()


async def test_without_a_replica_every_read_is_on_the_primary(database_url: str) -> None:
    primary = await create_pool(DbSettings(database_url))
    log = ReadLog()
    routing = ReadRouting(primary, None, listener=log)
    try:
        async with routing.running():
            assert routing.for_read() is primary
            assert not await routing.check()
            repo = PgPartyRepository(primary, reads=routing)
            assert await repo.find_by_cpf(new_cpf()) is None
            assert await repo.search_by_name("NINGUEM", limit=1) == []
        assert log.reads == ["primary", "primary"]
        assert not routing.serving
    finally:
        await primary.close()


async def test_a_replica_without_the_schema_yet_is_not_an_error(database_url: str) -> None:
    # Stand-in for a replica that has not replayed a migration: a database of the same server
    # without the schema (not in recovery, so its lag is 0 and it serves).
    primary = await create_pool(DbSettings(database_url))
    behind = await create_pool(DbSettings(database_url), url=database_url_for("postgres"))
    log = ReadLog()
    routing = ReadRouting(primary, behind, listener=log)
    try:
        assert await routing.check()
        cpf = new_cpf()
        raw = encode(dossier_payload(cpf, name="ESQUEMA NOVO"))
        repo = PgPartyRepository(primary, reads=routing)
        await asyncio.create_task(repo.store_dossier(cpf, decode_dossier(raw), raw, None))
        found = await repo.find_by_cpf(cpf)
        assert found is not None
        assert found.party.full_name == "ESQUEMA NOVO"
        assert log.reads == ["primary"]
        assert not routing.serving
    finally:
        await behind.close()
        await primary.close()


async def test_a_replica_down_while_the_primary_checkpoints_catches_up_when_back(
    replica: PgReplica, database_url: str
) -> None:
    """The primary keeps the WAL a stopped replica has not received (its replication slot):
    segments switched and a checkpoint while it is down (a DROP DATABASE forces one, and the
    tests drop databases all the time) do not strand it."""
    await asyncio.to_thread(replica.kill)
    primary = await asyncpg.connect(database_url, timeout=5)
    table = f"wal_filler_{new_cpf()}"
    try:
        await primary.execute(f"CREATE TABLE {table} (n int)")
        for _ in range(3):  # three segments with WAL in them, switched, then a checkpoint
            await primary.execute(f"INSERT INTO {table} SELECT generate_series(1, 20000)")
            await primary.execute("SELECT pg_switch_wal()")
        await primary.execute("CHECKPOINT")
    finally:
        await primary.execute(f"DROP TABLE IF EXISTS {table}")
        await primary.close()
    await asyncio.to_thread(replica.start)
    await replica.wait_caught_up()
