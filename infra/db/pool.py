"""asyncpg pool factory with the service's timeouts.

Takes any object with the ``Settings`` database fields (structural typing), so ``infra`` does
not import ``app`` (the composition root).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

import asyncpg

from domain.errors import DependencyUnavailable
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "UNAVAILABLE_ERRORS",
    "PoolSettings",
    "PooledConnection",
    "ReadConnection",
    "create_pool",
    "pooled_connection",
    "reset_untraced",
]

# What "PostgreSQL cannot serve now" looks like from asyncpg.
UNAVAILABLE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,  # refused, reset, unreachable, DNS
    TimeoutError,  # pool acquire, connect, or command_timeout (asyncio.TimeoutError on 3.11)
    asyncpg.InterfaceError,  # connection closed/released underneath us
    # A connection the server terminated mid-use ("cannot switch to state 12; another operation
    # is in progress"); asyncpg drops it from the pool (e.g. after pg_terminate_backend).
    asyncpg.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: statement timeout, shutdown, cancel
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40: deadlock, serialization failure
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
)


@asynccontextmanager
async def pooled_connection(
    pool: asyncpg.Pool, acquire_timeout: float
) -> AsyncIterator[PoolConnectionProxy]:
    """A pooled connection; outage-like failures inside become ``DependencyUnavailable``.

    Every PostgreSQL adapter goes through this, so an outage is always a typed 503 and never a
    hang past ``acquire_timeout`` plus the statement timeout.
    """
    try:
        async with pool.acquire(timeout=acquire_timeout) as conn:
            yield conn
    except UNAVAILABLE_ERRORS as exc:
        raise _unavailable(exc) from exc


class PooledConnection(asyncpg.Connection):
    """asyncpg's connection that can be handed back to the pool without the reset round trip.

    A read that leaves no session state behind (:class:`ReadConnection`) marks its connection;
    :func:`reset_untraced` then skips the reset query for that one release, since the session is
    exactly as clean as when the read acquired it.
    """

    __slots__ = ("_stateless_use",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # Any: asyncpg's own signature
        super().__init__(*args, **kwargs)
        self._stateless_use = False

    def mark_stateless(self) -> None:
        """Record that the current holder ran only statements that leave no session state."""
        self._stateless_use = True

    def take_stateless(self) -> bool:
        """Whether the holder marked its use stateless; clears the mark (one release only)."""
        stateless, self._stateless_use = self._stateless_use, False
        return stateless


class ReadConnection:
    """A pooled connection for reads that leave no session state: released without a reset.

    ``async with ReadConnection(pool, acquire_timeout) as conn:``. The block may only run
    plain statements outside a transaction: no ``SET``, ``LISTEN``, advisory lock, cursor or
    temporary table. When it ends normally the connection goes back to the pool without the
    reset query, so a lookup is one round trip; when it raises (an error, a timeout, a
    cancellation) the connection is reset as usual. On a pool not built by :func:`create_pool`
    the connection is simply reset. Outages become ``DependencyUnavailable`` as in
    :func:`pooled_connection`.

    A class rather than a generator-based context manager: it runs on every lookup, and the
    acquire goes through ``asyncio.timeout`` rather than asyncpg's own timeout, which wraps the
    acquire in a task of its own.
    """

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self._pool = pool
        self._timeout = acquire_timeout
        self._conn: PoolConnectionProxy | None = None

    async def __aenter__(self) -> PoolConnectionProxy:
        try:
            async with asyncio.timeout(self._timeout):
                conn: PoolConnectionProxy = await self._pool.acquire()
        except UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._conn = conn
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:  # pragma: no cover - __aenter__ failed, so no block ran
            return
        stateless = exc is None and _mark_stateless(conn)
        try:
            # Without a reset there is nothing to bound; a reset gets the acquire's budget.
            await self._pool.release(conn, timeout=None if stateless else self._timeout)
        except UNAVAILABLE_ERRORS as release_exc:
            raise _unavailable(release_exc) from (exc or release_exc)
        if isinstance(exc, UNAVAILABLE_ERRORS):
            raise _unavailable(exc) from exc


def _mark_stateless(conn: PoolConnectionProxy) -> bool:
    mark = getattr(conn, "mark_stateless", None)
    if mark is None:
        return False
    mark()
    return True


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(
        "postgres", f"postgres unavailable ({type(exc).__name__})", retry_after=1
    )


async def reset_untraced(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, exactly asyncpg's default, without its span.

    asyncpg's default reset (``Connection.reset``) sends ``get_reset_query()`` (release advisory
    locks, close cursors, ``UNLISTEN *``, ``RESET ALL``) through ``Connection.execute``, which the
    asyncpg instrumentation traces: one span per release, three per typical request, none of
    them telling anything about the request. The hygiene is kept whole (the next acquirer gets
    a clean session: the queue LISTENs on a pooled connection, the stores take advisory locks);
    only the span goes. Skipping the reset would save a round trip but leave session state behind,
    and dropping spans by name in a processor would still pay for creating them.

    The pool rolls back an open transaction (``Connection._reset``) before calling this. A
    connection whose holder only read (:class:`ReadConnection`) is not reset: nothing in its
    session changed since the previous release reset it.
    """
    if isinstance(conn, PooledConnection) and conn.take_stateless():
        return
    query = conn.get_reset_query()
    if query:
        with untraced():
            await conn.execute(query)


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


async def create_pool(
    settings: PoolSettings, *, min_size: int | None = None, url: str | None = None
) -> asyncpg.Pool:
    """Create a pool whose every query is bounded by the statement timeout.

    Args:
        settings: Database settings.
        min_size: Override ``db_pool_min``; 0 opens connections lazily, so a process can start
            (and report "not ready") while PostgreSQL is down.
        url: Another server than ``settings.database_url`` (the read replica), same bounds.

    Returns:
        The pool, with ``min_size`` connections open.

    Raises:
        OSError: When ``min_size`` > 0 and PostgreSQL is unreachable (as from asyncpg).
    """
    return await asyncpg.create_pool(
        url or settings.database_url,
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max,
        timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_statement_timeout_ms / 1000 + _CLIENT_TIMEOUT_MARGIN_S,
        reset=reset_untraced,
        connection_class=PooledConnection,
        server_settings={
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": settings.service_name,
        },
    )
