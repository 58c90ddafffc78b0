"""PostgreSQL ledger of paid upstream calls (``core.usage_daily``).

One row per (UTC day, tenant, key id, upstream) with its count. Counts arrive in batches from
each process's accumulator (:class:`infra.usage.UsageRecorder`) and are added with ONE
statement per batch (:data:`UPSERT_USAGE`), whatever its size; concurrent batches of several
processes add up (``calls = calls + excluded.calls`` under the row lock). Outages surface as
``DependencyUnavailable("postgres", ...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from domain.usage import UsageCount
from infra.db.pool import pooled_connection

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    import asyncpg

__all__ = ["SELECT_USAGE", "UPSERT_USAGE", "PgUsageLedger"]

DEFAULT_ACQUIRE_TIMEOUT_S: Final = 2.0

# $1 date[], $2 text[] tenant, $3 text[] key id ('' = no key), $4 text[] upstream, $5 bigint[].
# The batch holds each (day, tenant, key, upstream) once (the accumulator sums them).
UPSERT_USAGE: Final = """
INSERT INTO core.usage_daily AS u (day, tenant, key_id, upstream, calls)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (day, tenant, key_id, upstream) DO UPDATE SET calls = u.calls + excluded.calls
"""

# $1 tenant, $2 first day, $3 last day (both included).
SELECT_USAGE: Final = """
SELECT day, tenant, key_id, upstream, calls
  FROM core.usage_daily
 WHERE tenant = $1 AND day BETWEEN $2 AND $3
 ORDER BY day, key_id, upstream
"""


class PgUsageLedger:
    """Paid-call counts in PostgreSQL (:class:`domain.ports.UsageLedger`), plus the batch write.

    Args:
        pool: The process's pool.
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    __slots__ = ("_acquire_timeout", "_pool")

    def __init__(
        self, pool: asyncpg.Pool, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S
    ) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    async def add(self, counts: Sequence[UsageCount]) -> None:
        """Add ``counts`` (distinct keys) to the stored ones in one statement.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now (nothing was added).
        """
        if not counts:
            return
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            await conn.execute(
                UPSERT_USAGE,
                [c.day for c in counts],
                [c.tenant for c in counts],
                [c.key_id for c in counts],
                [c.upstream for c in counts],
                [c.calls for c in counts],
            )

    async def usage(self, tenant: str, first: dt.date, last: dt.date) -> list[UsageCount]:
        """The counts of ``tenant`` from ``first`` to ``last``.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            rows = await conn.fetch(SELECT_USAGE, tenant, first, last)
        return [
            UsageCount(r["day"], r["tenant"], r["key_id"], r["upstream"], r["calls"]) for r in rows
        ]
