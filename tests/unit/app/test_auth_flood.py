"""A flood of random well-formed keys from one client, against a counting fake key store.

The API-key middleware runs on a minimal Litestar app with the real :class:`KeyVerifier` and
:class:`AuthFailureGuard`; the store is a fake of the ``KeyLookup`` port that counts look-ups (each
one is a PostgreSQL query in production), and the limiter's Redis always fails, so the failure
count runs on the limiter's own per-process fallback. No network, no database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get
from litestar.middleware.base import DefineMiddleware
from litestar.testing import AsyncTestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from app.http.middleware.auth import AuthMiddleware, KeyVerifier
from app.http.middleware.ratelimit import AuthFailureGuard, ClientAddress
from domain.keys import ApiKey, generate_key
from infra.ratelimit import RateLimiter, parse_policy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

QUOTA = 5


class CountingKeyStore:
    """``KeyLookup`` fake: one known key; counts every look-up."""

    def __init__(self, known: dict[bytes, ApiKey]) -> None:
        self.known = known
        self.lookups = 0

    async def find_by_hash(self, digest: bytes) -> ApiKey | None:
        self.lookups += 1
        await asyncio.sleep(0.002)  # a round trip: concurrent look-ups queue behind each other
        return self.known.get(digest)

    async def touch(self, key_id: uuid.UUID) -> None:
        return None


class DeadRedis:
    """Enough of ``redis.asyncio.Redis`` for the limiter; every script call fails."""

    def __init__(self) -> None:
        self.calls = 0

    def register_script(self, _script: str) -> Any:  # Any: redis' Script object
        async def run(**_kwargs: Any) -> Any:
            self.calls += 1
            raise RedisConnectionError("down")

        return run


@get("/probe", sync_to_thread=False)
def probe() -> dict[str, bool]:
    return {"ok": True}


@dataclass(frozen=True, slots=True)
class AuthServices:
    """The two collaborators the middleware takes from the process's services."""

    key_verifier: KeyVerifier
    auth_failures: AuthFailureGuard | None


@dataclass(frozen=True, slots=True)
class Handle:
    services: AuthServices


class Harness:
    def __init__(
        self, client: AsyncTestClient[Litestar], store: CountingKeyStore, redis: DeadRedis
    ) -> None:
        self.client = client
        self.store = store
        self.redis = redis


@pytest.fixture
async def harness() -> AsyncIterator[tuple[Harness, str]]:
    valid = generate_key()
    key = ApiKey(
        id=uuid.uuid4(),
        name="valid",
        tenant="acme",
        key_prefix=valid.prefix,
        scopes=("read", "enrich"),
        created_at=dt.datetime.now(dt.UTC),
    )
    store = CountingKeyStore({valid.digest: key})
    redis = DeadRedis()
    limiter = RateLimiter(
        redis,  # type: ignore[arg-type]
        prefix="t:",
        policies={"auth": parse_policy(f"{QUOTA}/minute")},
        retry_redis_after_s=0.0,
    )
    handle = Handle(
        AuthServices(
            key_verifier=KeyVerifier(store, ttl_s=5),
            auth_failures=AuthFailureGuard(limiter, ClientAddress(()), b"salt"),
        )
    )
    app = Litestar(
        route_handlers=[probe], middleware=[DefineMiddleware(AuthMiddleware, services=handle)]
    )
    async with AsyncTestClient(app=app) as client:
        yield Harness(client, store, redis), valid.plaintext


async def test_random_key_flood_is_refused_with_429_and_key_lookups_stay_bounded(
    harness: tuple[Harness, str],
) -> None:
    h, _ = harness
    statuses = []
    for _ in range(200):
        response = await h.client.get("/probe", headers={"X-API-Key": generate_key().plaintext})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == 429
    assert statuses[:QUOTA] == [401] * QUOTA
    assert statuses[QUOTA:] == [429] * (200 - QUOTA)
    # The quota, plus the one look-up whose failure found the client over it; then none.
    assert h.store.lookups <= QUOTA + 1


async def test_a_cached_valid_key_never_touches_the_failure_counter(
    harness: tuple[Harness, str],
) -> None:
    h, valid = harness
    for _ in range(50):
        assert (await h.client.get("/probe", headers={"X-API-Key": valid})).status_code == 200
    assert h.redis.calls == 0
    assert h.store.lookups == 1  # then served from the positive cache


async def test_a_blocked_client_keeps_its_cached_valid_key(
    harness: tuple[Harness, str],
) -> None:
    h, valid = harness
    assert (await h.client.get("/probe", headers={"X-API-Key": valid})).status_code == 200
    for _ in range(QUOTA + 3):
        await h.client.get("/probe", headers={"X-API-Key": generate_key().plaintext})
    flooded = await h.client.get("/probe", headers={"X-API-Key": generate_key().plaintext})
    assert flooded.status_code == 429
    assert (await h.client.get("/probe", headers={"X-API-Key": valid})).status_code == 200


async def test_missing_and_malformed_keys_count_as_failures_without_lookups(
    harness: tuple[Harness, str],
) -> None:
    h, _ = harness
    statuses = [(await h.client.get("/probe")).status_code for _ in range(QUOTA)]
    statuses += [
        (await h.client.get("/probe", headers={"X-API-Key": "not-a-key"})).status_code
        for _ in range(3)
    ]
    assert statuses == [401] * QUOTA + [429] * 3
    assert h.store.lookups == 0


async def test_the_same_unknown_key_is_looked_up_once_within_the_ttl() -> None:
    store = CountingKeyStore({})
    verifier = KeyVerifier(store, ttl_s=5)
    unknown = generate_key().digest
    for _ in range(20):
        assert await verifier.verify(unknown) is None
    assert store.lookups == 1


async def test_negative_entries_are_bounded() -> None:
    store = CountingKeyStore({})
    verifier = KeyVerifier(store, ttl_s=5, max_entries=8)
    for _ in range(100):
        await verifier.verify(generate_key().digest)
    assert verifier.cached_entries <= 8


async def test_a_concurrent_flood_costs_no_lookup_once_the_client_is_blocked(
    harness: tuple[Harness, str],
) -> None:
    # 100 requests in flight together: those queued for a look-up when the client gets blocked
    # are declined when their turn comes instead of each costing one.
    h, _ = harness
    responses = await asyncio.gather(
        *(
            h.client.get("/probe", headers={"X-API-Key": generate_key().plaintext})
            for _ in range(100)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) == QUOTA
    assert statuses.count(429) == 100 - QUOTA
    # Look-ups run 4 at a time: at most that many were under way when the block was learnt.
    assert h.store.lookups <= QUOTA + 4
