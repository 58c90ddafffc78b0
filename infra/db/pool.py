"""asyncpg pool factory with the service's timeouts.

Takes any object with the ``Settings`` database fields (structural typing), so ``infra`` does
not import ``app`` (the composition root).
"""

from __future__ import annotations

from typing import Protocol

import asyncpg

__all__ = ["PoolSettings", "create_pool"]

# Client-side margin over the server's statement_timeout: the server cancels first and reports
# QueryCanceledError; the client timeout only fires when the server cannot even answer.
_CLIENT_TIMEOUT_MARGIN_S = 1.0


class PoolSettings(Protocol):
    """The fields of ``app.config.Settings`` the pool needs."""

    @property
    def database_url(self) -> str: ...
    @property
    def db_pool_min(self) -> int: ...
    @property
    def db_pool_max(self) -> int: ...
    @property
    def db_statement_timeout_ms(self) -> int: ...
    @property
    def db_connect_timeout_s(self) -> float: ...
    @property
    def service_name(self) -> str: ...


async def create_pool(settings: PoolSettings, *, min_size: int | None = None) -> asyncpg.Pool:
    """Create a pool whose every query is bounded by the statement timeout.

    Args:
        settings: Database settings.
        min_size: Override ``db_pool_min``; 0 opens connections lazily, so a process can start
            (and report "not ready") while PostgreSQL is down.

    Returns:
        The pool, with ``min_size`` connections open.

    Raises:
        OSError: When ``min_size`` > 0 and PostgreSQL is unreachable (as from asyncpg).
    """
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max,
        timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_statement_timeout_ms / 1000 + _CLIENT_TIMEOUT_MARGIN_S,
        server_settings={
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": settings.service_name,
        },
    )
