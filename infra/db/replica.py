"""Reads on a PostgreSQL read replica, with the primary as the fallback (ADR 0015).

:class:`ReadRouting` holds the primary's pool and, when ``DATABASE_READ_URL`` is set, a second
pool on a streaming replica. :meth:`ReadRouting.read` runs one plain read (the rules of
:class:`~infra.db.pool.ReadConnection`) on the replica while it is *serving*, else on the
primary:

* serving means the background check (every ``REPLICA_CHECK_S``) reached the replica and found it
  at most ``REPLICA_MAX_LAG_S`` behind; a replica that received every WAL record it knows of and
  replayed it is caught up (lag 0) however long the primary has been idle;
* a read that fails on the replica because it cannot serve (refused, reset, shutting down, a
  statement cancelled by a recovery conflict, a table or column a migration just added and it
  has not replayed yet) is run again on the primary, and the replica stops serving until the
  next check finds it healthy: a replica outage is never an error for the caller;
* read-your-writes: once the current task wrote (:func:`mark_wrote`, called by the stores before
  they write), its later reads go to the primary. The flag is a context variable: each HTTP
  request and each job runs in its own task, so it covers exactly "this request wrote".

Reads whose answer decides a write (the stored dossier's age, the webhook job, idempotency, API
keys) do not come here: they use the primary's pool directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import asyncpg
import structlog

from domain.errors import DependencyUnavailable
from infra.db.pool import PoolSettings, ReadConnection, create_pool
from observability.metrics import ReplicaMetrics
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "REPLICA_LAG_SQL",
    "ReadRouting",
    "ReadTarget",
    "ReplicaListener",
    "mark_wrote",
    "open_read_routing",
    "wrote",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
ReadTarget = Literal["replica", "primary"]

# How far the replica's replay is behind, in seconds, and the WAL position it has received.
# $1: the position received at the previous check (NULL: none), $2: seconds since that check.
# * Not in recovery (a promoted replica, or a primary given as DATABASE_READ_URL): 0.
# * Streaming from the primary and every WAL record received is replayed: 0, however old the
#   last replayed transaction is (an idle primary writes nothing, so "now() - last replay" would
#   grow without bound while the replica is perfectly current).
# * Streaming, and everything received by the previous check is replayed now: at most the time
#   since then (a long transaction being streamed, or a busy primary, keeps "received" just
#   ahead of "replayed" at every check, and its commit is not replayed until it ends).
# * Otherwise (replay stuck or slower than the stream, or no stream from the primary): the age
#   of the last replayed transaction; unknown (none replayed since the replica started):
#   infinity. A replica cut off from the primary thus stops serving once the primary has
#   written anything for longer than the bound.
# Without pg_read_all_stats the WAL receiver's status reads NULL (its pid is always visible).
REPLICA_LAG_SQL: Final = """
WITH r AS (
  SELECT pg_is_in_recovery() AS recovering,
         EXISTS (SELECT FROM pg_stat_wal_receiver
                  WHERE pid IS NOT NULL AND coalesce(status, 'streaming') = 'streaming')
           AS streaming,
         pg_last_wal_receive_lsn() AS received,
         pg_last_wal_replay_lsn() AS replayed
)
SELECT CASE
  WHEN NOT recovering THEN 0
  WHEN streaming AND received = replayed THEN 0
  WHEN streaming AND $1::text IS NOT NULL AND replayed >= $1::text::pg_lsn THEN $2::float8
  ELSE coalesce(
    extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 'Infinity'::float8)
END::float8 AS lag_s, received::text AS received
FROM r
"""

# A replica within the lag bound may not have replayed the migration the running code needs yet
# (the release command migrates the primary just before the new code starts): the primary has it.
_SCHEMA_BEHIND: Final[tuple[type[BaseException], ...]] = (
    asyncpg.exceptions.UndefinedTableError,
    asyncpg.exceptions.UndefinedColumnError,
    asyncpg.exceptions.UndefinedFunctionError,
    asyncpg.exceptions.InvalidSchemaNameError,
)

_wrote: ContextVar[bool] = ContextVar("c2s_db_wrote", default=False)


def mark_wrote() -> None:
    """Record that the current task (request, job) writes party data: its later reads go to the
    primary, which has the write (read-your-writes)."""
    _wrote.set(True)


def wrote() -> bool:
    """Whether the current task called :func:`mark_wrote`."""
    return _wrote.get()


class ReplicaListener(Protocol):
    """Where reads and the replica's health are reported (metrics)."""

    def read(self, target: ReadTarget) -> None:
        """One read was answered by ``target``."""
        ...

    def health(self, *, up: bool, lag_s: float | None, serving: bool) -> None:
        """The result of a check (or of a read that failed on the replica)."""
        ...


class _Quiet:
    def read(self, target: ReadTarget) -> None:
        return None

    def health(self, *, up: bool, lag_s: float | None, serving: bool) -> None:
        return None


class ReadRouting:
    """Chooses the pool of each read: the replica while it serves, the primary otherwise.

    Args:
        primary: The primary's pool (every write, and every read without a serving replica).
        replica: The replica's pool, or ``None`` (no replica: every read on the primary).
        acquire_timeout: Seconds to wait for a pooled connection (also bounds a check's).
        max_lag_s: The replica serves while it is at most this far behind (``REPLICA_MAX_LAG_S``).
        check_s: Seconds between health checks (``REPLICA_CHECK_S``).
        listener: Receives reads and health (metrics); quiet by default.
    """

    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool | None = None,
        *,
        acquire_timeout: float = 2.0,
        max_lag_s: float = 5.0,
        check_s: float = 1.0,
        listener: ReplicaListener | None = None,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self._timeout = acquire_timeout
        self.max_lag_s = max_lag_s
        self.check_s = check_s
        self._listener: ReplicaListener = listener or _Quiet()
        # Until a check has found it healthy, the replica does not serve.
        self._serving = False
        self._up = False
        self._lag_s: float | None = None
        # What the replica had received at the previous check, and when (monotonic).
        self._received: str | None = None
        self._received_at = 0.0
        self._checker: asyncio.Task[None] | None = None

    # --- state -------------------------------------------------------------------------------

    @property
    def primary(self) -> asyncpg.Pool:
        """The primary's pool: writes and the reads that must see them."""
        return self._primary

    @property
    def replica(self) -> asyncpg.Pool | None:
        """The replica's pool (``None`` without ``DATABASE_READ_URL``)."""
        return self._replica

    @property
    def serving(self) -> bool:
        """The replica answers reads now (configured, reachable, within the lag bound)."""
        return self._serving

    @property
    def up(self) -> bool:
        """The last check reached the replica."""
        return self._up

    @property
    def lag_s(self) -> float | None:
        """The replica's lag at the last check (``None``: unreachable or never checked)."""
        return self._lag_s

    def for_read(self) -> asyncpg.Pool:
        """The pool a read of the current task goes to (the caller handles a replica failure;
        :meth:`read` does it all)."""
        replica = self._replica
        if replica is None or not self._serving or _wrote.get():
            return self._primary
        return replica

    # --- reads -------------------------------------------------------------------------------

    async def read(self, run: Callable[[PoolConnectionProxy], Awaitable[T]]) -> T:
        """Run ``run`` on a connection of the replica, or of the primary (see the module).

        ``run`` may only run plain statements outside a transaction (``ReadConnection``).

        Raises:
            DependencyUnavailable: The primary cannot serve (a replica failure is retried on the
                primary, never raised).
        """
        pool = self.for_read()
        if pool is not self._primary:
            try:
                async with ReadConnection(pool, self._timeout) as conn:
                    result = await run(conn)
            except DependencyUnavailable as exc:
                self._failed(exc.__cause__ or exc)
            except _SCHEMA_BEHIND as exc:
                self._failed(exc)
            else:
                self._listener.read("replica")
                return result
        async with ReadConnection(self._primary, self._timeout) as conn:
            result = await run(conn)
        self._listener.read("primary")
        return result

    def _failed(self, exc: BaseException) -> None:
        """A read failed on the replica: stop serving from it until a check finds it healthy."""
        if self._serving:
            log.warning("db_replica_read_failed", error_type=type(exc).__name__)
        self._set(up=False, lag_s=None)

    # --- health ------------------------------------------------------------------------------

    async def check(self) -> bool:
        """Measure the replica's lag once and update :attr:`serving`; return it.

        Not traced (a probe, part of no request).
        """
        replica = self._replica
        if replica is None:
            return False
        started = time.monotonic()
        previous, since = self._received, started - self._received_at
        try:
            with untraced():
                async with ReadConnection(replica, self._timeout) as conn:
                    row = await conn.fetchrow(REPLICA_LAG_SQL, previous, since)
        except DependencyUnavailable as exc:
            if self._up:
                log.warning("db_replica_down", error_type=type(exc.__cause__ or exc).__name__)
            self._received = None
            self._set(up=False, lag_s=None)
            return False
        lag = row["lag_s"] if row is not None else None
        self._received, self._received_at = (row["received"] if row else None), started
        self._set(up=True, lag_s=float(lag) if lag is not None else math.inf)
        return self._serving

    def _set(self, *, up: bool, lag_s: float | None) -> None:
        serving = up and lag_s is not None and lag_s <= self.max_lag_s
        if serving != self._serving:
            log.info("db_replica_serving" if serving else "db_replica_not_serving", lag_s=lag_s)
        self._up, self._lag_s, self._serving = up, lag_s, serving
        self._listener.health(up=up, lag_s=lag_s, serving=serving)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ReadRouting]:
        """Check the replica every ``check_s`` in a background task until exit (nothing to do
        without a replica). The first check runs at once; reads use the primary until it
        finds the replica healthy."""
        if self._replica is None:
            yield self
            return
        with untraced():
            self._checker = asyncio.get_running_loop().create_task(self._check_forever())
        try:
            yield self
        finally:
            checker, self._checker = self._checker, None
            if checker is not None:
                checker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checker

    async def _check_forever(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # a bug must not stop the checks for good
                log.error("db_replica_check_failed", error_type=type(exc).__name__)
                self._set(up=False, lag_s=None)
            await asyncio.sleep(self.check_s)


class ReplicaSettings(PoolSettings, Protocol):
    """The fields of ``app.config.Settings`` the read routing needs."""

    @property
    def database_read_url(self) -> str: ...
    @property
    def replica_check_s(self) -> float: ...
    @property
    def replica_max_lag_s(self) -> float: ...


@asynccontextmanager
async def open_read_routing(
    settings: ReplicaSettings, primary: asyncpg.Pool, *, listener: ReplicaListener | None = None
) -> AsyncIterator[ReadRouting]:
    """The process's read routing: a lazy pool on ``DATABASE_READ_URL`` (same bounds as the
    primary's), checked every ``REPLICA_CHECK_S``; without the setting, every read on
    ``primary``. Reads and checks feed the metrics (``ReplicaMetrics``) unless ``listener`` is
    given. Leaving it stops the checks and closes the replica's pool."""
    if settings.database_read_url:
        where = urlsplit(settings.database_read_url)
        log.info("db_read_replica", host=where.hostname, port=where.port)
    replica = None
    if settings.database_read_url:
        replica = await create_pool(settings, min_size=0, url=settings.database_read_url)
    routing = ReadRouting(
        primary,
        replica,
        acquire_timeout=settings.db_connect_timeout_s,
        max_lag_s=settings.replica_max_lag_s,
        check_s=settings.replica_check_s,
        listener=listener or ReplicaMetrics(),
    )
    try:
        async with routing.running():
            yield routing
    finally:
        if replica is not None:
            await replica.close()
