"""PostgreSQL record of each lead's last message: implements :class:`domain.ports.LeadMessages`.

``core.lead_messages`` holds, per tenant and lead id, a keyed digest of the contact fingerprint
the lead was last messaged for and the CPFs of that message (``docs/contract.md`` §2, "One message
per lead"). Durable and shared, so the rule holds across restarts and workers. Each method is one
auto-committed statement; the claim is an upsert that changes the row only for another
fingerprint, so of concurrent claims of one fingerprint exactly one wins (the others wait for its
commit, then see the row unchanged). Outages surface as ``DependencyUnavailable("postgres")``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

from domain.tenancy import current_tenant
from infra.db.pool import pooled_connection
from infra.db.repository import DEFAULT_ACQUIRE_TIMEOUT_S

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractAsyncContextManager

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["CLAIM_LEAD_MESSAGE", "PgLeadMessages"]

# $1 tenant, $2 lead id, $3 digest. Returns a row when the lead is recorded for this digest.
MESSAGED: Final = """
SELECT 1 FROM core.lead_messages WHERE tenant = $1 AND lead_id = $2 AND contact_digest = $3
"""

# Record a message unless the lead is recorded for this digest already.
# $1 tenant, $2 lead id, $3 digest, $4 text[] CPFs. Returns lead_id when this call won.
CLAIM_LEAD_MESSAGE: Final = """
INSERT INTO core.lead_messages AS m (tenant, lead_id, contact_digest, cpfs)
VALUES ($1, $2, $3, $4::text[])
ON CONFLICT (tenant, lead_id) DO UPDATE
   SET contact_digest = excluded.contact_digest, cpfs = excluded.cpfs, messaged_at = now()
 WHERE m.contact_digest <> excluded.contact_digest
RETURNING lead_id
"""

# Forget a claim whose message provably did not reach C2S. $1 tenant, $2 lead id, $3 digest.
RELEASE: Final = """
DELETE FROM core.lead_messages WHERE tenant = $1 AND lead_id = $2 AND contact_digest = $3
"""


class PgLeadMessages:
    """The lead-message record over ``core.lead_messages``.

    Args:
        pool: The process's pool.
        salt: Key of the fingerprint digest (``CACHE_KEY_SALT``): no contact is stored in clear.
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        salt: bytes,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._salt = salt[:64]
        self._acquire_timeout = acquire_timeout

    def digest(self, contact: str) -> str:
        """The keyed digest of a contact fingerprint (hex)."""
        return hashlib.blake2b(
            contact.encode(), key=self._salt, digest_size=16, person=b"lead-message"
        ).hexdigest()

    def _connection(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        return pooled_connection(self._pool, self._acquire_timeout)

    async def messaged(self, lead_id: str, contact: str) -> bool:
        async with self._connection() as conn:
            row = await conn.fetchval(
                MESSAGED, current_tenant.get() or "", lead_id, self.digest(contact)
            )
        return row is not None

    async def claim(self, lead_id: str, contact: str, cpfs: Sequence[str]) -> bool:
        async with self._connection() as conn:
            won = await conn.fetchval(
                CLAIM_LEAD_MESSAGE,
                current_tenant.get() or "",
                lead_id,
                self.digest(contact),
                list(cpfs),
            )
        return won is not None

    async def release(self, lead_id: str, contact: str) -> None:
        async with self._connection() as conn:
            await conn.execute(RELEASE, current_tenant.get() or "", lead_id, self.digest(contact))
