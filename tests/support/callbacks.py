"""Helpers of the callback tests: the receiver's signature check (as docs/callbacks.md gives
it), a job summary body, and recording or reading a job's delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import TYPE_CHECKING

from infra.db.callbacks import deliveries_of, enqueue_callback

if TYPE_CHECKING:
    import asyncpg

    from domain.callbacks import DeliveryView

__all__ = ["enqueue", "only_delivery", "summary", "verify"]


def verify(header: str, body: bytes, secret: str, now: float, tolerance_s: int = 300) -> bool:
    """The receiver's verification, as docs/callbacks.md gives it (written from the docs)."""
    items = [item.split("=", 1) for item in header.split(",")]
    timestamps = [value for key, value in items if key == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    if abs(now - int(timestamps[0])) > tolerance_s:
        return False
    signed = timestamps[0].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in items if key == "v1")


def summary(job_id: uuid.UUID) -> bytes:
    return json.dumps(
        {"job_id": str(job_id), "state": "done", "counts": {"done": 3, "failed": 0}}
    ).encode()


async def enqueue(
    pool: asyncpg.Pool, key_id: uuid.UUID, url: str, job_id: uuid.UUID | None = None
) -> uuid.UUID:
    job = job_id or uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_callback(
            conn, job_id=job, tenant="acme", key_id=str(key_id), url=url, body=summary(job)
        )
    return job


async def only_delivery(pool: asyncpg.Pool, job_id: uuid.UUID) -> DeliveryView:
    views = await deliveries_of(pool, job_id)
    assert len(views) == 1
    return views[0]
