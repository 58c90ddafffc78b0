"""A refreshed dossier is seen by every process within the stated bound (ADR 0010).

Three independent app servers (Granian, one worker each, own ports) share the session's
database, one Redis key prefix and the sandbox upstreams. Each holds the dossier in its
in-process copy (:class:`infra.localcache.LocalDossierCache`); the test process rewrites it with
a :class:`infra.cache.RedisDossierCache` built as ``open_services`` builds it (same prefix, salt,
HMAC keys and invalidation channel) and polls every server every 20 ms. Each server must answer
the new body within ``DOSSIER_LOCAL_CACHE_STALE_S`` (+ the poll's allowance) and never the old
one after the bound. The key has the ``read`` scope only: a miss is a 404 "not cached", never a
Work API call, so every 200 is the shared cache's body.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import pytest

from app.bootstrap import dossier_invalidation_channel, open_redis
from app.config import load_settings, parse_hmac_keys
from infra.cache import HmacEnvelope, KeySpace, RedisDossierCache
from tests.support.db import delete_redis_keys
from tests.support.factories import dossier_payload, encode, issue_key, new_cpf
from tests.support.polling import wait_until
from tests.support.processes import granian_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVERS = 3
STALE_BOUND_S = 1.0
"""``DOSSIER_LOCAL_CACHE_STALE_S`` given to every server: the stated bound."""
POLL_INTERVAL_S = 0.02
ALLOWANCE_S = 0.25
"""On top of the bound, for the poll: one poll interval plus one HTTP round trip to a server on
a loaded 2-core machine."""
OBSERVE_AFTER_S = 0.3
"""How long every server is still polled after bound + allowance, to catch an old body then."""
ROUNDS = 3

HIT_LOCAL = 'cache_requests_total{cache="work_api",result="hit_local"}'
SERVING = "dossier_local_cache_serving"


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll of one server: when the request was sent and answered, and what came back."""

    sent: float
    received: float
    status: int
    body: bytes


@pytest.fixture
async def xproc_env(e2e_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """The servers' environment: a key prefix of this test only (its keys deleted at the end),
    explicit cache secrets and local-cache bounds."""
    prefix = e2e_env["REDIS_KEY_PREFIX"] + f"xproc-{uuid.uuid4().hex[:6]}:"
    env = {
        **os.environ,
        **e2e_env,
        "REDIS_KEY_PREFIX": prefix,
        "CACHE_HMAC_KEYS": f"xproc:{secrets.token_hex(16)}",
        "CACHE_KEY_SALT": secrets.token_hex(16),
        "DOSSIER_LOCAL_CACHE_MB": "8",
        "DOSSIER_LOCAL_CACHE_ENTRIES": "1000",
        "DOSSIER_LOCAL_CACHE_STALE_S": str(STALE_BOUND_S),
        "FLAG_USE_DOSSIER_CACHE": "true",
    }
    try:
        yield env
    finally:
        await delete_redis_keys(prefix)


@pytest.fixture
def servers(xproc_env: dict[str, str]) -> Iterator[list[str]]:
    """``SERVERS`` independent app servers (one Granian worker each), stopped at the end."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                granian_server("app.main:create_app", env=xproc_env, ready_path="/health")
            )
            for _ in range(SERVERS)
        ]


@pytest.fixture
async def writer(xproc_env: dict[str, str]) -> AsyncIterator[RedisDossierCache]:
    """The dossier cache as ``app.bootstrap.open_services`` builds it, in the test process
    (without an in-memory copy of its own: it only writes, and publishes like any process)."""
    settings = load_settings(xproc_env)
    redis = open_redis(settings)
    try:
        yield RedisDossierCache(
            redis,
            KeySpace(settings.redis_key_prefix, settings.cache_key_salt.get().encode()),
            HmacEnvelope(parse_hmac_keys(settings.cache_hmac_keys.get())),
            settings.work_api_cache_ttl_s,
            channel=dossier_invalidation_channel(settings),
        )
    finally:
        await redis.aclose()


async def _metric(session: aiohttp.ClientSession, url: str, sample: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _read(session: aiohttp.ClientSession, url: str, cpf: str) -> Reading:
    sent = time.monotonic()
    async with session.get(f"{url}/api/v1/work/modules/all", params={"documento": cpf}) as r:
        body = await r.read()
    return Reading(sent, time.monotonic(), r.status, body)


async def _holds_in_memory(session: aiohttp.ClientSession, url: str, cpf: str, body: bytes) -> None:
    """Wait until ``url`` answers ``body`` from its in-memory copy: a read answered ``body``
    while the server counted one more local hit. No read may answer anything else."""

    async def memory_hit() -> bool:
        before = await _metric(session, url, HIT_LOCAL)
        reading = await _read(session, url, cpf)
        assert (reading.status, reading.body) == (200, body), (url, reading)
        return await _metric(session, url, HIT_LOCAL) > before

    await wait_until(
        lambda: _metric(session, url, SERVING), 15, what=f"{url}'s local cache to serve"
    )
    await wait_until(memory_hit, 10, what=f"{url} to answer from memory")


async def _poll(session: aiohttp.ClientSession, url: str, cpf: str, until: float) -> list[Reading]:
    readings: list[Reading] = []
    while time.monotonic() < until:
        readings.append(await _read(session, url, cpf))
        await asyncio.sleep(POLL_INTERVAL_S)
    return readings


def _check_round(
    url: str, readings: list[Reading], old: bytes, new: bytes, put_started: float, put_done: float
) -> float:
    """Assert one server's readings after a rewrite; return when it switched (s after the put)."""
    odd = [
        (round(r.sent - put_started, 3), r.status, r.body[:80])
        for r in readings
        if r.status != 200 or r.body not in (old, new)
    ]
    assert not odd, f"{url} answered neither the old nor the new body: {odd}"
    first_new = next((i for i, r in enumerate(readings) if r.body == new), None)
    assert first_new is not None, (
        f"{url} never served the new body: {len(readings)} reads, all the old body, the last "
        f"answered {readings[-1].received - put_started if readings else 0:.3f}s after the put"
    )
    switched = readings[first_new].received - put_started
    assert switched <= STALE_BOUND_S + ALLOWANCE_S, (
        f"{url} served the new body {switched:.3f}s after the put "
        f"(bound {STALE_BOUND_S}s + allowance {ALLOWANCE_S}s)"
    )
    stale = [
        round(r.sent - put_done, 3)
        for r in readings
        if r.body == old and r.sent > put_done + STALE_BOUND_S
    ]
    assert not stale, f"{url} served the old body to reads sent at +{stale}s after the put"
    back = [round(r.sent - put_done, 3) for r in readings[first_new:] if r.body != new]
    assert not back, f"{url} went back to the old body (reads sent at +{back}s after the put)"
    return switched


async def test_a_refreshed_dossier_is_seen_by_every_process_within_the_bound(
    servers: list[str],
    writer: RedisDossierCache,
    database_url: str,
    sandbox: SandboxAdmin,
) -> None:
    key, _ = await issue_key(database_url, tenant="xproc", scopes="read")
    cpf = new_cpf()
    bodies = [encode(dossier_payload(cpf, name=f"FULANO VERSAO {v}")) for v in range(1, 2 + ROUNDS)]
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(headers={"X-API-Key": key}, timeout=timeout) as session:
        for url in servers:  # not cached yet: a read-only key gets 404, no Work API call
            assert (await _read(session, url, cpf)).status == 404

        await writer.put(f"cpf:{cpf}", bodies[0])
        for url in servers:
            await _holds_in_memory(session, url, cpf, bodies[0])

        for old, new in itertools.pairwise(bodies):
            put_started = time.monotonic()
            await writer.put(f"cpf:{cpf}", new)
            put_done = time.monotonic()
            until = put_started + STALE_BOUND_S + ALLOWANCE_S + OBSERVE_AFTER_S
            polls = await asyncio.gather(*(_poll(session, url, cpf, until) for url in servers))
            switched = {
                url: _check_round(url, readings, old, new, put_started, put_done)
                for url, readings in zip(servers, polls, strict=True)
            }
            print(
                f"v{bodies.index(new) + 1}: switched after",
                {u: f"{s:.3f}s" for u, s in switched.items()},
            )
            for url in servers:  # the next round starts from memory again
                await _holds_in_memory(session, url, cpf, new)

    assert sum((await sandbox.counters()).get("work_api", {}).values()) == 0
