"""``c2s-api worker`` as a real process posts bulk-job callbacks beside its consumer, and gives an
interrupted attempt back on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.callbacks import enqueue, only_delivery, verify
from tests.support.http_servers import CallbackReceiver, serving
from tests.support.polling import wait_until
from tests.support.processes import ChildProcess, worker_argv

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterator

    import asyncpg

    from infra.db.callback_secrets import PgCallbackSecrets

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def worker_env(base_env: dict[str, str]) -> dict[str, str]:
    """The session's services and a compressed callback backoff."""
    return {
        **os.environ,
        **base_env,
        "CALLBACK_RETRY_BASE_S": "0.05",
        "CALLBACK_POLL_S": "0.05",
        "CALLBACK_TIMEOUT_S": "20",
        "HOST": "127.0.0.1",
    }


@pytest.fixture
def worker(worker_env: dict[str, str]) -> Iterator[ChildProcess]:
    argv = worker_argv(concurrency=2, lease_timeout_s=30.0, grace_s=2.0)
    process = ChildProcess("worker", argv, worker_env)
    try:
        yield process
    finally:
        process.terminate(timeout_s=10)
        process.stop()


async def test_the_worker_retries_a_failing_receiver_until_it_answers_2xx(
    pool: asyncpg.Pool, secrets: PgCallbackSecrets, key_id: uuid.UUID, worker: ChildProcess
) -> None:
    secret = await secrets.rotate(key_id)
    with serving(CallbackReceiver([500, 500, 200])) as receiver:
        job_id = await enqueue(pool, key_id, receiver.url)

        async def delivered() -> bool:
            return (await only_delivery(pool, job_id)).state == "delivered"

        await wait_until(delivered, 30, what=f"delivered; worker said:\n{worker.output(20)}")
    view = await only_delivery(pool, job_id)
    assert (view.attempts, view.last_status) == (3, 200)
    now = time.time()
    assert [
        verify(post.headers["c2s-signature"], post.body, secret, now) for post in receiver.received
    ] == [True] * 3


async def test_sigterm_mid_attempt_gives_the_delivery_back_and_the_worker_exits_cleanly(
    pool: asyncpg.Pool, secrets: PgCallbackSecrets, key_id: uuid.UUID, worker: ChildProcess
) -> None:
    await secrets.rotate(key_id)
    with serving(CallbackReceiver()) as receiver:
        receiver.hold.clear()  # the receiver answers nothing until told
        job_id = await enqueue(pool, key_id, receiver.url)
        await asyncio.to_thread(receiver.arrived.wait, 30)
        assert receiver.arrived.is_set(), worker.output(20)
        worker.signal(signal.SIGTERM)
        status = await worker.wait(15)
        receiver.hold.set()
    assert status == 0, worker.output(30)
    view = await only_delivery(pool, job_id)
    assert (view.state, view.attempts) == ("pending", 1)
    assert view.last_error == "interrupted: the worker stopped"
    assert view.next_attempt_at is not None
    assert view.next_attempt_at.timestamp() <= time.time()  # due again at once, for any worker
