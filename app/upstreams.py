"""The upstream clients of one process (C2S, Diretrix, Work API), their HTTP session and their
circuit breakers, opened and closed together by the composition root (``app/bootstrap.py``)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra.breaker import BreakerRegistry
from infra.upstream import (
    C2SClient,
    C2SConfig,
    DiretrixClient,
    DiretrixConfig,
    WorkApiClient,
    WorkApiConfig,
    create_session,
    create_upstream_clients,
)
from observability.metrics import BreakerMetrics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from app.config import Settings
    from infra.redisclient import RedisClient

__all__ = ["BREAKER_SYNC_INTERVAL_S", "Upstreams", "open_upstreams", "upstream_configs"]


@dataclass(frozen=True, slots=True)
class Upstreams:
    """The process's upstream clients and their breaker registry."""

    c2s: C2SClient
    diretrix: DiretrixClient
    work_api: WorkApiClient
    breakers: BreakerRegistry


def upstream_configs(settings: Settings) -> tuple[C2SConfig, DiretrixConfig, WorkApiConfig]:
    """The configured upstream URLs and credentials.

    An unset ``*_BASE_URL`` points at ``http://127.0.0.1:SANDBOX_PORT`` with the configured
    credentials; ``c2s-api serve`` fills in the local sandbox's credentials when it starts one.
    """
    local = f"http://127.0.0.1:{settings.sandbox_port}"
    c2s = C2SConfig(
        base_url=settings.c2s_base_url or local,
        token=settings.c2s_token.get(),
        timeout_s=settings.c2s_timeout_s,
        connect_timeout_s=settings.c2s_connect_timeout_s,
    )
    diretrix = DiretrixConfig(
        base_url=settings.diretrix_base_url or local,
        user=settings.diretrix_user,
        password=settings.diretrix_pass.get(),
        timeout_s=settings.diretrix_timeout_s,
        connect_timeout_s=settings.diretrix_connect_timeout_s,
    )
    work_api = WorkApiConfig(
        base_url=settings.work_api_base_url or local,
        token=settings.work_api_token.get(),
        timeout_s=settings.work_api_timeout_s,
        connect_timeout_s=settings.work_api_connect_timeout_s,
    )
    return c2s, diretrix, work_api


BREAKER_SYNC_INTERVAL_S = 5.0
"""How often the breaker state gauges are re-read from Redis (one small script per breaker)."""


@asynccontextmanager
async def open_upstreams(settings: Settings, redis: RedisClient) -> AsyncIterator[Upstreams]:
    """Open the HTTP session and breakers; close them (breakers first) on exit."""
    session = create_session(settings.upstream_max_connections)
    gauges = BreakerMetrics()
    breakers = BreakerRegistry(redis, key_prefix=f"{settings.redis_key_prefix}cb:", listener=gauges)
    try:
        c2s, diretrix, work_api = upstream_configs(settings)
        clients = create_upstream_clients(
            session, breakers, c2s=c2s, diretrix=diretrix, work_api=work_api
        )
        # The state gauges follow the shared state, not this process's last call.
        breakers.start_sync(BREAKER_SYNC_INTERVAL_S, gauges.publish)
        yield Upstreams(
            c2s=clients.c2s,
            diretrix=clients.diretrix,
            work_api=clients.work_api,
            breakers=breakers,
        )
    finally:
        await breakers.aclose()
        await session.close()
