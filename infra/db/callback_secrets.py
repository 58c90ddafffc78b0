"""PostgreSQL store of the callback signing secrets of API keys (``core.callback_secrets``).

The delivery loop must sign with the secret itself, so it cannot be stored as a digest (as API
keys are): it is stored sealed with AES-256-GCM (:class:`infra.sealing.AeadEnvelope`, purpose
``callback_secret``, keys derived from ``CACHE_HMAC_KEYS``), bound to its key and secret ids as
associated data, so a sealed value copied to another key's row does not open. A row sealed under
a key id no longer listed in ``CACHE_HMAC_KEYS`` does not open either: keep the old key id listed
while callback secrets sealed under it are valid, or rotate them (``docs/callbacks.md``).

At most :data:`domain.callbacks.MAX_VALID_SECRETS` secrets are valid per key: the newest signs
first, the previous one keeps signing (a second ``v1=``) until it is retired.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Final

import msgspec

from domain.callbacks import MAX_VALID_SECRETS, new_callback_secret
from domain.errors import Conflict, NotFound
from infra.db.pool import pooled_connection

if TYPE_CHECKING:
    import asyncpg

    from infra.sealing import AeadEnvelope

__all__ = ["CallbackSecretInfo", "PgCallbackSecrets", "sealing_name"]

DEFAULT_ACQUIRE_TIMEOUT_S: Final = 2.0
SEALING_PURPOSE: Final = "callback_secret"

# $1 key_id uuid. Locks the key's row: rotations of one key are serialised.
LOCK_KEY: Final = "SELECT id FROM core.api_keys WHERE id = $1 FOR UPDATE"
COUNT_VALID: Final = """
SELECT count(*) FROM core.callback_secrets WHERE key_id = $1 AND retired_at IS NULL
"""
INSERT_SEALED: Final = """
INSERT INTO core.callback_secrets (id, key_id, sealed) VALUES ($1, $2, $3)
"""
# $1 key_id. Retires every valid secret but the newest; returns how many.
RETIRE_PREVIOUS: Final = """
UPDATE core.callback_secrets
   SET retired_at = now()
 WHERE key_id = $1
   AND retired_at IS NULL
   AND id <> (SELECT id FROM core.callback_secrets
               WHERE key_id = $1 AND retired_at IS NULL
               ORDER BY created_at DESC, id DESC LIMIT 1)
"""
# $1 key_id, $2 limit. Valid secrets, newest first.
VALID_SECRETS: Final = """
SELECT id, sealed FROM core.callback_secrets
 WHERE key_id = $1 AND retired_at IS NULL
 ORDER BY created_at DESC, id DESC
 LIMIT $2
"""
LIST_SECRETS: Final = """
SELECT id, created_at, retired_at FROM core.callback_secrets
 WHERE key_id = $1
 ORDER BY created_at DESC, id DESC
"""


def sealing_name(key_id: uuid.UUID, secret_id: uuid.UUID) -> str:
    """The associated data a secret is sealed under (binds it to its row)."""
    return f"callback_secret:{key_id}:{secret_id}"


class CallbackSecretInfo(msgspec.Struct, frozen=True):
    """A secret's metadata (never the secret)."""

    id: uuid.UUID
    created_at: datetime
    retired_at: datetime | None


class PgCallbackSecrets:
    """Callback signing secrets per API key, sealed at rest.

    Args:
        pool: The process's pool.
        envelope: ``AeadEnvelope(parse_hmac_keys(CACHE_HMAC_KEYS), purpose="callback_secret")``.
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        envelope: AeadEnvelope,
        *,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._envelope = envelope
        self._acquire_timeout = acquire_timeout

    async def rotate(self, key_id: uuid.UUID) -> str:
        """Add a new secret for the key (the first one, or the next in a rotation).

        The previous secret stays valid (it keeps signing) until :meth:`retire_previous`.

        Returns:
            The new secret's plaintext (show it once; it is stored sealed only).

        Raises:
            NotFound: No API key has that id.
            Conflict: Two secrets are valid already: retire the previous one first.
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        secret = new_callback_secret()
        secret_id = uuid.uuid4()
        sealed = self._envelope.seal(sealing_name(key_id, secret_id), secret.encode())
        async with (
            pooled_connection(self._pool, self._acquire_timeout) as conn,
            conn.transaction(),
        ):
            if await conn.fetchval(LOCK_KEY, key_id) is None:
                raise NotFound("no API key with that id")
            if (await conn.fetchval(COUNT_VALID, key_id) or 0) >= MAX_VALID_SECRETS:
                raise Conflict(
                    f"{MAX_VALID_SECRETS} callback secrets are valid already: "
                    "retire the previous one first (--retire)"
                )
            await conn.execute(INSERT_SEALED, secret_id, key_id, sealed)
        return secret

    async def retire_previous(self, key_id: uuid.UUID) -> int:
        """Retire every valid secret of the key but the newest; how many were retired.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            status = await conn.execute(RETIRE_PREVIOUS, key_id)
        return int(status.rsplit(" ", 1)[-1])

    async def signing_secrets(self, key_id: uuid.UUID) -> list[str]:
        """The key's valid secrets, newest first (those that no longer open are left out).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            rows = await conn.fetch(VALID_SECRETS, key_id, MAX_VALID_SECRETS)
        opened = (
            self._envelope.open(sealing_name(key_id, row["id"]), bytes(row["sealed"]))
            for row in rows
        )
        return [plain.decode() for plain in opened if plain is not None]

    async def list(self, key_id: uuid.UUID) -> list[CallbackSecretInfo]:
        """Every secret of the key, newest first (metadata only).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            rows = await conn.fetch(LIST_SECRETS, key_id)
        return [CallbackSecretInfo(row["id"], row["created_at"], row["retired_at"]) for row in rows]
