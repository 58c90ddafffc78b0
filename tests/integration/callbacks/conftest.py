"""Fixtures of the callback tests: a pool on the session database, an API key with its callback
secret, and the stores the delivery loop uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import pytest

from app.config import parse_hmac_keys
from domain.keys import new_api_key
from infra.db.callback_secrets import SEALING_PURPOSE, PgCallbackSecrets
from infra.db.callbacks import PgCallbackDeliveries
from infra.db.keys import PgApiKeyStore
from infra.sealing import AeadEnvelope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from app.config import Settings


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the session database, with no delivery left from another test."""
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    try:
        await created.execute("DELETE FROM core.callback_deliveries")
        yield created
    finally:
        await created.close()


@pytest.fixture
def secrets(pool: asyncpg.Pool, settings: Settings) -> PgCallbackSecrets:
    """The callback secrets store, sealing as the worker does."""
    envelope = AeadEnvelope(
        parse_hmac_keys(settings.cache_hmac_keys.get()), purpose=SEALING_PURPOSE
    )
    return PgCallbackSecrets(pool, envelope)


@pytest.fixture
def deliveries(pool: asyncpg.Pool) -> PgCallbackDeliveries:
    """The delivery loop's store."""
    return PgCallbackDeliveries(pool)


@pytest.fixture
async def key_id(pool: asyncpg.Pool) -> uuid.UUID:
    """A fresh API key of tenant ``acme`` (no callback secret yet)."""
    _, record = new_api_key(
        name=f"callbacks {uuid.uuid4().hex[:6]}",
        tenant="acme",
        scopes="read,enrich",
        now=datetime.now(UTC),
        expires_days=None,
    )
    key = await PgApiKeyStore(pool).create(record)
    return key.id
