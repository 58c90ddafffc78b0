"""Clients of the paid upstreams (C2S, Diretrix, Work API) behind the domain ports.

Every call has a timeout, runs under a named circuit breaker (``infra.breaker``) and, for reads
only, a bounded jittered retry (``stamina``). Build them with :func:`create_upstream_clients`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from infra.upstream.c2s import C2SClient, C2SConfig
from infra.upstream.diretrix import DiretrixClient, DiretrixConfig
from infra.upstream.http import (
    DEFAULT_RETRY,
    NO_RETRY,
    RetryableUpstreamError,
    RetryPolicy,
    UpstreamTransport,
    create_session,
    is_upstream_failure,
    mask,
    redact_url,
)
from infra.upstream.work_api import WorkApiClient, WorkApiConfig, detect_soft_error

if TYPE_CHECKING:
    import aiohttp

    from infra.breaker.registry import BreakerRegistry

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "C2SClient",
    "C2SConfig",
    "DiretrixClient",
    "DiretrixConfig",
    "RetryPolicy",
    "RetryableUpstreamError",
    "UpstreamClients",
    "UpstreamTransport",
    "WorkApiClient",
    "WorkApiConfig",
    "create_session",
    "create_upstream_clients",
    "detect_soft_error",
    "is_upstream_failure",
    "mask",
    "redact_url",
]


class UpstreamClients(msgspec.Struct, frozen=True, kw_only=True):
    """The three upstream clients of one worker."""

    c2s: C2SClient
    diretrix: DiretrixClient
    work_api: WorkApiClient


def create_upstream_clients(
    session: aiohttp.ClientSession,
    breakers: BreakerRegistry,
    *,
    c2s: C2SConfig,
    diretrix: DiretrixConfig,
    work_api: WorkApiConfig,
) -> UpstreamClients:
    """Build the clients on one shared session, with the breakers ``c2s``, ``diretrix`` and
    ``work_api`` from ``breakers`` (created with :func:`is_upstream_failure`).

    Args:
        session: From :func:`create_session` (the caller closes it).
        breakers: The worker's breaker registry (the caller closes it).
        c2s: C2S settings.
        diretrix: Diretrix settings.
        work_api: Work API settings.

    Returns:
        The clients.
    """
    return UpstreamClients(
        c2s=C2SClient(session, c2s, breakers.get("c2s", is_failure=is_upstream_failure)),
        diretrix=DiretrixClient(
            session, diretrix, breakers.get("diretrix", is_failure=is_upstream_failure)
        ),
        work_api=WorkApiClient(
            session, work_api, breakers.get("work_api", is_failure=is_upstream_failure)
        ),
    )
