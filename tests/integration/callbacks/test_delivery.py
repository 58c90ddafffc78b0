"""Callback delivery (infra/callbacks.py, infra/db/callbacks.py) against real PostgreSQL and a
receiver over HTTP that checks signatures the way docs/callbacks.md tells receivers to."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from infra.callbacks import LEASE_MARGIN_S, CallbackDispatcher
from infra.db.callbacks import ClaimedDelivery, deliveries_of, enqueue_callback
from tests.support.callbacks import enqueue, only_delivery, summary, verify
from tests.support.clocks import FakeClock
from tests.support.http_servers import CallbackReceiver, serving
from tests.support.polling import wait_until

if TYPE_CHECKING:
    import asyncpg

    from infra.db.callback_secrets import PgCallbackSecrets
    from infra.db.callbacks import PgCallbackDeliveries

pytestmark = pytest.mark.integration

DAY = 24 * 3600.0


def dispatcher(
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    *,
    retry_base_s: float = 0.05,
    **kwargs: object,
) -> CallbackDispatcher:
    return CallbackDispatcher(
        deliveries=deliveries,
        secrets=secrets,
        environment=str(kwargs.pop("environment", "test")),
        timeout_s=float(kwargs.pop("timeout_s", 5.0)),  # type: ignore[arg-type]
        retry_base_s=retry_base_s,
        poll_s=0.02,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_receiver_failing_twice_gets_three_signed_attempts_and_the_delivery_ends_delivered(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    secret = await secrets.rotate(key_id)
    with serving(CallbackReceiver([500, 500, 200])) as receiver:
        job_id = await enqueue(pool, key_id, receiver.url)
        stop = asyncio.Event()
        async with dispatcher(deliveries, secrets) as loop:
            running = asyncio.create_task(loop.run(stop))
            try:
                await wait_until(
                    lambda: _state(pool, job_id, "delivered"), 20, what="the delivery delivered"
                )
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
        view = await only_delivery(pool, job_id)
        assert (view.state, view.attempts, view.last_status) == ("delivered", 3, 200)
        assert view.delivered_at is not None
        assert len(receiver.received) == 3
        now = time.time()
        for attempt, post in enumerate(receiver.received, start=1):
            assert post.path == "/hooks/c2s"
            assert json.loads(post.body)["job_id"] == str(job_id)
            assert verify(post.headers["c2s-signature"], post.body, secret, now)
            assert not verify(post.headers["c2s-signature"], post.body + b" ", secret, now)
            assert post.headers["c2s-delivery-id"] == str(view.id)
            assert post.headers["c2s-delivery-attempt"] == str(attempt)
            assert post.headers["content-type"] == "application/json"


async def _state(pool: asyncpg.Pool, job_id: uuid.UUID, state: str) -> bool:
    views = await deliveries_of(pool, job_id)
    return bool(views) and views[0].state == state


async def test_a_receiver_failing_for_24_hours_is_retried_with_backoff_then_the_delivery_fails(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    await secrets.rotate(key_id)
    clock = FakeClock(start=float(int(time.time())))
    with serving(CallbackReceiver([500] * 1000)) as receiver:
        job_id = await enqueue(pool, key_id, receiver.url)
        async with dispatcher(
            deliveries, secrets, retry_base_s=10.0, clock=clock.now
        ) as loop:  # the production schedule, on a virtual clock
            # Enqueued "now" by PostgreSQL's clock; the virtual one starts at the same second.
            clock.advance(1)
            gaps: list[float] = []
            while (view := await only_delivery(pool, job_id)).state == "pending":
                assert view.next_attempt_at is not None
                due = view.next_attempt_at.timestamp()
                if view.attempts:
                    gaps.append(due - clock.now())
                clock.t = max(clock.now(), due)
                assert await loop.deliver_due() == 1
                assert len(gaps) < 500
        assert view.state == "failed"
        assert view.failed_at is not None
        assert (view.last_status, view.last_error) == (500, "HTTP 500")
        assert view.attempts == len(receiver.received) > 20
        assert view.first_attempt_at is not None
        assert view.last_attempt_at is not None
        window = view.last_attempt_at.timestamp() - view.first_attempt_at.timestamp()
        assert DAY - 3600 < window <= DAY  # retried close to the end of 24 h, never after
        assert max(gaps) <= 3600  # backoff capped at one hour
        assert gaps[0] <= 10  # the first retry comes quickly


async def test_while_a_secret_is_rotated_each_delivery_verifies_under_either_secret(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    old = await secrets.rotate(key_id)
    new = await secrets.rotate(key_id)
    now = time.time()
    with serving(CallbackReceiver()) as receiver:
        async with dispatcher(deliveries, secrets) as loop:
            await enqueue(pool, key_id, receiver.url)
            assert await loop.deliver_due() == 1
            assert await secrets.retire_previous(key_id) == 1
            await enqueue(pool, key_id, receiver.url)
            assert await loop.deliver_due() == 1
    during, after = receiver.received
    assert during.headers["c2s-signature"].count("v1=") == 2
    assert verify(during.headers["c2s-signature"], during.body, old, now)
    assert verify(during.headers["c2s-signature"], during.body, new, now)
    assert after.headers["c2s-signature"].count("v1=") == 1
    assert verify(after.headers["c2s-signature"], after.body, new, now)
    assert not verify(after.headers["c2s-signature"], after.body, old, now)


async def test_a_key_without_a_callback_secret_is_retried_with_the_reason_not_posted_unsigned(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    with serving(CallbackReceiver()) as receiver:
        job_id = await enqueue(pool, key_id, receiver.url)
        async with dispatcher(deliveries, secrets) as loop:
            assert await loop.deliver_due() == 1
        assert receiver.received == []
    view = await only_delivery(pool, job_id)
    assert (view.state, view.attempts) == ("pending", 1)
    assert view.last_error == "no valid callback secret for the job's API key"


async def test_a_delivery_is_recorded_only_if_the_caller_s_transaction_commits(
    pool: asyncpg.Pool, key_id: uuid.UUID
) -> None:
    job_id = uuid.uuid4()

    async def end_job_then_fail() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_callback(
                conn,
                job_id=job_id,
                tenant="acme",
                key_id=key_id,
                url="https://hooks.example.com/cb",
                body=summary(job_id),
            )
            raise RuntimeError("job rollback")

    with pytest.raises(RuntimeError, match="job rollback"):
        await end_job_then_fail()
    assert await deliveries_of(pool, job_id) == []


async def test_stopping_mid_attempt_gives_the_delivery_back_and_the_next_worker_delivers_it(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    await secrets.rotate(key_id)
    with serving(CallbackReceiver()) as receiver:
        receiver.hold.clear()  # the receiver hangs
        job_id = await enqueue(pool, key_id, receiver.url)
        async with dispatcher(deliveries, secrets, timeout_s=30.0) as loop:
            running = asyncio.create_task(loop.run(asyncio.Event()))
            await asyncio.to_thread(receiver.arrived.wait, 15)
            running.cancel()  # SIGTERM past the grace: the attempt is interrupted
            with pytest.raises(asyncio.CancelledError):
                await running
        receiver.hold.set()
        view = await only_delivery(pool, job_id)
        assert (view.state, view.attempts) == ("pending", 1)
        assert view.last_error == "interrupted: the worker stopped"
        assert view.next_attempt_at is not None
        async with dispatcher(deliveries, secrets) as other:
            assert await other.deliver_due() == 1  # due at once, not after the lease
        view = await only_delivery(pool, job_id)
        assert (view.state, view.attempts) == ("delivered", 2)
        assert [post.headers["c2s-delivery-id"] for post in receiver.received] == [str(view.id)] * 2


async def test_a_worker_that_died_mid_attempt_leaves_the_delivery_due_after_its_lease(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    await secrets.rotate(key_id)
    clock = FakeClock(start=float(int(time.time())) + 1)
    with serving(CallbackReceiver()) as receiver:
        job_id = await enqueue(pool, key_id, receiver.url)
        async with dispatcher(deliveries, secrets, clock=clock.now, timeout_s=10.0) as loop:
            # A worker claims it and dies: nothing is recorded.
            lost = await deliveries.claim_due(
                now=_at(clock.now()), lease_until=_at(clock.now() + 10 + LEASE_MARGIN_S), limit=5
            )
            assert [type(item) for item in lost] == [ClaimedDelivery]
            assert await loop.deliver_due() == 0  # leased: nobody else takes it
            clock.advance(10 + LEASE_MARGIN_S)
            assert await loop.deliver_due() == 1
        # The dead worker's late answer cannot overwrite the outcome.
        assert not await deliveries.finish(
            lost[0],
            state="failed",
            next_attempt_at=_at(clock.now()),
            last_status=None,
            last_error="late",
            now=_at(clock.now()),
        )
    view = await only_delivery(pool, job_id)
    assert (view.state, view.attempts) == ("delivered", 2)
    assert len(receiver.received) == 1


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_a_delivery_claimed_after_its_24_hour_window_fails_without_being_posted(
    pool: asyncpg.Pool,
    deliveries: PgCallbackDeliveries,
    secrets: PgCallbackSecrets,
    key_id: uuid.UUID,
) -> None:
    # E.g. every worker was down for a day after the first attempt.
    await secrets.rotate(key_id)
    with serving(CallbackReceiver()) as receiver:
        job_id = await enqueue(pool, key_id, receiver.url)
        await pool.execute(
            "UPDATE core.callback_deliveries SET attempts = 1, last_status = 503,"
            " first_attempt_at = now() - interval '25 hours' WHERE job_id = $1",
            job_id,
        )
        async with dispatcher(deliveries, secrets) as loop:
            assert await loop.deliver_due() == 1
        assert receiver.received == []
    view = await only_delivery(pool, job_id)
    assert (view.state, view.attempts, view.last_error) == ("failed", 2, "retry window over")
