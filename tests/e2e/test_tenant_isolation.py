"""Tenant isolation of replays and single-flight, end to end.

The real app (in-process, and under Granian for truly concurrent requests), PostgreSQL, Redis and
the sandbox over HTTP; the Work API calls are counted by the sandbox itself.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from infra.cache import KeySpace
from tests.support.db import REDIS_BASE_URL
from tests.support.factories import issue_key
from tests.support.processes import granian_server
from tests.support.sandbox import PEOPLE, WEBHOOK_SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from app.config import Settings
    from tests.support.sandbox import SandboxAdmin as Sandbox

pytestmark = pytest.mark.integration

PROCESS = "/api/v1/leads/process"
WEBHOOK = "/api/v1/webhooks/c2s"


@pytest.fixture(scope="module")
def live_url(e2e_env: dict[str, str]) -> Iterator[str]:
    """The app under Granian (the in-process client serialises requests)."""
    with granian_server(
        "app.main:create_app", env={**os.environ, **e2e_env}, ready_path="/health"
    ) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(scope="module")
async def key_a(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="tenant-a", scopes="read,enrich")
    return plaintext


@pytest.fixture(scope="module")
async def key_b(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="tenant-b", scopes="read,enrich")
    return plaintext


@pytest.fixture(scope="module")
async def key_a2(database_url: str) -> str:
    """A second key of tenant A."""
    plaintext, _ = await issue_key(
        database_url, tenant="tenant-a", scopes="read,enrich", name="second"
    )
    return plaintext


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_BASE_URL)
    yield client
    await client.aclose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def uncached(redis: aioredis.Redis, settings: Settings, cpf: str) -> str:
    """Make sure no cached dossier of ``cpf`` is left from an earlier test; return the CPF."""
    keys = KeySpace(settings.redis_key_prefix, settings.cache_key_salt.get().encode())
    await redis.delete(keys.key("wa", f"cpf:{cpf}"))
    return cpf


async def work_api_calls(sandbox: Sandbox) -> int:
    return sum((await sandbox.counters()).get("work_api", {}).values())


# --- point 3: /leads/process dedup per tenant -------------------------------------------------


async def test_lead_replay_never_reaches_another_tenant(
    client: AsyncTestClient[Litestar], sandbox: Sandbox, key_a: str, key_b: str
) -> None:
    lead = await sandbox.create_lead(person_index=431)
    params = {"id": lead["lead_id"]}
    first = (await client.get(PROCESS, params=params, headers=auth(key_a))).json()
    other = (await client.get(PROCESS, params=params, headers=auth(key_b))).json()
    again = (await client.get(PROCESS, params=params, headers=auth(key_a))).json()
    assert first["success"] is True, first
    assert first["cpfs_processed"] == [lead["cpf"]]
    # B, within A's replay window and with A's CPF marked recent: its own processing.
    assert "duplicate_request" not in other, other
    assert other["success"] is True
    assert other["message"].startswith("Successfully processed"), other
    assert again == {**first, "duplicate_request": True}  # A keeps its own replay
    assert len(await sandbox.messages(lead["lead_id"])) == 2


# --- point 8c: no personal data in plaintext in Redis -----------------------------------------


async def test_replays_and_idempotency_records_hold_no_plaintext_personal_data(
    client: AsyncTestClient[Litestar],
    sandbox: Sandbox,
    key_a: str,
    redis: aioredis.Redis,
    e2e_settings: Settings,
) -> None:
    lead = await sandbox.create_lead(person_index=432)
    processed = await client.get(PROCESS, params={"id": lead["lead_id"]}, headers=auth(key_a))
    assert processed.json()["success"] is True
    enriched = await client.post(
        "/api/v1/enrich",
        json={"cpf": lead["cpf"]},
        headers={**auth(key_a), "Idempotency-Key": f"pii-{lead['lead_id']}"},
    )
    assert enriched.status_code == 200, enriched.text
    view = enriched.json()
    needles = {lead["cpf"]}
    needles |= {e["email"] for e in view["contact_info"]["emails"]}
    needles |= {p["phone"] for p in view["contact_info"]["phones"]}
    customer = lead["customer"]
    needles |= {customer["email"], re.sub(r"\D", "", customer["phone"])[-11:]}
    assert len(needles) >= 3

    prefix = e2e_settings.redis_key_prefix
    scanned: dict[str, bytes] = {}
    async for raw_name in redis.scan_iter(match=prefix + "*", count=1000):
        name = raw_name.decode()
        kind = name[len(prefix) :].split(":", 1)[0]
        # The Work API and contact caches are not answers to a client (see docs/security.md).
        if kind in ("wa", "cc") or await redis.type(raw_name) != b"string":
            continue
        value = await redis.get(raw_name)
        if value is not None:
            scanned[name] = value if isinstance(value, bytes) else value.encode()
    assert any(":idem:" in n for n in scanned), "no idempotency record found"
    assert any(re.search(r":lead:\{[0-9a-f]+\}:done$", n) for n in scanned), "no lead replay"
    leaks = {n: sorted(x for x in needles if x.encode() in v) for n, v in scanned.items()}
    assert {n: found for n, found in leaks.items() if found} == {}


# --- point 8d: idempotency records per client ---------------------------------------------------


async def test_idempotency_key_of_tenant_a_never_answers_tenant_b(
    client: AsyncTestClient[Litestar], sandbox: Sandbox, key_a: str, key_b: str
) -> None:
    cpf = PEOPLE.cpf_for(433)
    headers = {"Idempotency-Key": "shared-between-tenants"}
    first = await client.post(
        "/api/v1/enrich", json={"cpf": cpf}, headers={**auth(key_a), **headers}
    )
    other = await client.post(
        "/api/v1/enrich", json={"cpf": cpf}, headers={**auth(key_b), **headers}
    )
    assert first.status_code == other.status_code == 200
    assert "idempotent-replayed" not in other.headers
    assert other.json()["metadata"]["party_id"] != first.json()["metadata"]["party_id"]


async def test_idempotency_keys_are_per_api_key(
    client: AsyncTestClient[Litestar], sandbox: Sandbox, key_a: str, key_a2: str
) -> None:
    headers = {"Idempotency-Key": "shared-between-keys"}
    first = await client.post(
        "/api/v1/enrich", json={"cpf": PEOPLE.cpf_for(434)}, headers={**auth(key_a), **headers}
    )
    other = await client.post(
        "/api/v1/enrich", json={"cpf": PEOPLE.cpf_for(435)}, headers={**auth(key_a2), **headers}
    )
    assert first.status_code == 200, first.text
    assert other.status_code == 200, other.text  # not 422: the other key's record is not ours
    assert "idempotent-replayed" not in other.headers


async def test_anonymous_clients_from_different_addresses_do_not_share_idempotency_keys(
    live_url: str, http: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    async def deliver(lead_index: int, address: str) -> tuple[int, dict[str, Any], bool]:
        lead = await sandbox.create_lead(person_index=lead_index)
        body = {
            "id": lead["lead_id"],
            "hook_action": "on_update_lead",
            "attributes": {"updated_at": "2025-11-26 08:00:00.000 -0300"},
        }
        headers = {
            "X-Webhook-Token": WEBHOOK_SECRET,
            "Idempotency-Key": "webhook-delivery-1",
            # The live server's peer is 127.0.0.1, a trusted proxy: its first hop is the client.
            "X-Forwarded-For": address,
        }
        async with http.post(live_url + WEBHOOK, json=body, headers=headers) as response:
            payload: dict[str, Any] = await response.json()
            return response.status, payload, "Idempotent-Replayed" in response.headers

    status_1, _, _ = await deliver(436, "203.0.113.10")
    status_2, answer_2, replayed_2 = await deliver(437, "198.51.100.20")
    assert status_1 == 200
    assert status_2 == 200, answer_2  # not 422 for another client's body
    assert not replayed_2
    assert answer_2["processed"] == 1


# --- point 8a: single-flight ------------------------------------------------------------------


async def test_30_concurrent_lookups_of_one_uncached_cpf_make_one_work_api_call(
    live_url: str,
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    key_a: str,
    redis: aioredis.Redis,
    e2e_settings: Settings,
) -> None:
    cpf = await uncached(redis, e2e_settings, PEOPLE.cpf_for(438))
    await sandbox.set_faults("work_api", latency_ms=300)
    url = f"{live_url}/api/v1/work/modules/all?documento={cpf}"

    async def get() -> bytes:
        async with http.get(url, headers=auth(key_a)) as response:
            assert response.status == 200
            return await response.read()

    bodies = await asyncio.gather(*(get() for _ in range(30)))
    assert set(bodies) == {PEOPLE.dossier_json(cpf)}
    assert await work_api_calls(sandbox) == 1


async def test_30_concurrent_customer_lookups_make_one_work_api_call(
    live_url: str,
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    key_b: str,
    redis: aioredis.Redis,
    e2e_settings: Settings,
) -> None:
    cpf = await uncached(redis, e2e_settings, PEOPLE.cpf_for(439))
    await sandbox.set_faults("work_api", latency_ms=300)
    url = f"{live_url}/api/v1/contributor/customer?cpf={cpf}"

    async def get() -> int:
        async with http.get(url, headers=auth(key_b)) as response:
            return response.status

    statuses = await asyncio.gather(*(get() for _ in range(30)))
    assert set(statuses) == {200}
    assert await work_api_calls(sandbox) == 1


async def test_two_app_processes_make_one_work_api_call(
    live_url: str,
    e2e_env: dict[str, str],
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    key_a: str,
    redis: aioredis.Redis,
    e2e_settings: Settings,
) -> None:
    cpf = await uncached(redis, e2e_settings, PEOPLE.cpf_for(440))
    await sandbox.set_faults("work_api", latency_ms=500)
    with granian_server(
        "app.main:create_app", env={**os.environ, **e2e_env}, ready_path="/health"
    ) as second_url:

        async def get(base: str) -> bytes:
            url = f"{base}/api/v1/work/modules/all?documento={cpf}"
            async with http.get(url, headers=auth(key_a)) as response:
                assert response.status == 200
                return await response.read()

        bodies = await asyncio.gather(*(get(u) for u in [live_url, second_url] * 15))
    assert set(bodies) == {PEOPLE.dossier_json(cpf)}
    assert await work_api_calls(sandbox) == 1
