"""SSRF: in production a callback reaches public addresses only, checked at delivery time on
every address its host resolves to (and the connection goes to the checked address)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
from aiohttp.abc import AbstractResolver

from domain.errors import InvalidInput
from infra.callbacks import CallbackDispatcher, NonPublicAddress, PublicOnlyResolver
from tests.support.callbacks import enqueue, only_delivery
from tests.support.http_servers import CallbackReceiver, serving

if TYPE_CHECKING:
    import uuid

    import asyncpg
    from aiohttp.abc import ResolveResult

    from infra.db.callback_secrets import PgCallbackSecrets
    from infra.db.callbacks import PgCallbackDeliveries

pytestmark = pytest.mark.integration


class FixedDns(AbstractResolver):
    """A DNS answering from a table (the test's zone): ``name -> [addresses]``."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.zone:
            raise OSError(f"no such host: {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.zone[host]
        ]

    async def close(self) -> None:
        return None


async def test_production_refuses_http_private_literals_and_names_resolving_to_loopback(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    await secrets.rotate(key_id)
    with serving(CallbackReceiver()) as receiver:
        port = receiver.server_address[1]
        dns = FixedDns(
            {
                "rebound.example.com": ["127.0.0.1"],
                "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
            }
        )
        plain_http = await enqueue(pool, key_id, f"http://rebound.example.com:{port}/cb")
        private = await enqueue(pool, key_id, f"https://10.0.0.1:{port}/cb")
        loopback_literal = await enqueue(pool, key_id, f"https://[::ffff:127.0.0.1]:{port}/cb")
        rebound = await enqueue(pool, key_id, f"https://rebound.example.com:{port}/cb")
        mixed = await enqueue(pool, key_id, f"https://mixed.example.com:{port}/cb")
        async with CallbackDispatcher(
            deliveries=deliveries,
            secrets=secrets,
            environment="production",
            timeout_s=5.0,
            concurrency=8,
            resolver=dns,
        ) as loop:
            assert await loop.deliver_due() == 5
        assert receiver.received == []  # nothing reached the loopback receiver
    view = await only_delivery(pool, plain_http)
    assert (view.state, view.last_error) == (
        "failed",
        "invalid callback URL: callback_url must use https",
    )
    for job in (private, loopback_literal):
        view = await only_delivery(pool, job)
        assert view.state == "failed"
        assert view.last_error is not None
        assert "public address" in view.last_error
    for job in (rebound, mixed):
        view = await only_delivery(pool, job)
        assert view.state == "pending"  # DNS may change: retried, checked again each time
        assert view.last_error == "refused: the callback host resolves to a non-public address"
    assert sorted(dns.asked) == ["mixed.example.com", "rebound.example.com"]


async def test_the_guarded_resolver_returns_exactly_the_addresses_it_checked() -> None:
    dns = FixedDns({"public.example.com": ["93.184.216.34", "2606:4700::6810:85e5"]})
    checked = await PublicOnlyResolver(dns).resolve("public.example.com", 443)
    assert [info["host"] for info in checked] == ["93.184.216.34", "2606:4700::6810:85e5"]
    for addresses in (["169.254.169.254"], ["8.8.8.8", "fd00::1"], []):
        with pytest.raises(NonPublicAddress):
            await PublicOnlyResolver(FixedDns({"h.example.com": addresses})).resolve(
                "h.example.com", 443
            )


def test_validation_at_registration_refuses_the_same_urls() -> None:
    from domain.callbacks import validate_callback_url

    for url in ("http://hooks.example.com/cb", "https://10.0.0.1/cb", "https://localhost/cb"):
        with pytest.raises(InvalidInput):
            validate_callback_url(url, environment="production")
