"""Which pool a read goes to (ADR 0015), without a server: the decision alone.

The reads themselves, the health check and the fallbacks run against a real replica in
``tests/integration/db/test_replica.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from infra.db.replica import ReadRouting, mark_wrote, wrote

if TYPE_CHECKING:
    import asyncpg

PRIMARY = cast("asyncpg.Pool", object())
REPLICA = cast("asyncpg.Pool", object())


async def test_without_a_replica_every_read_goes_to_the_primary() -> None:
    routing = ReadRouting(PRIMARY)
    assert routing.for_read() is PRIMARY
    assert not routing.serving
    assert not await routing.check()
    async with routing.running():  # nothing to check: no task
        assert routing.for_read() is PRIMARY


async def test_a_replica_never_checked_does_not_serve() -> None:
    routing = ReadRouting(PRIMARY, REPLICA)
    assert not routing.serving
    assert routing.for_read() is PRIMARY


async def test_the_write_flag_belongs_to_the_task_that_wrote() -> None:
    async def request_that_writes() -> bool:
        before = wrote()
        mark_wrote()
        return not before and wrote()

    async def other_request() -> bool:
        return wrote()

    assert await asyncio.create_task(request_that_writes())
    # Neither the caller nor a later request (its own task) inherits the flag.
    assert not wrote()
    assert not await asyncio.create_task(other_request())
