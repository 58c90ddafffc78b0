"""Single-flight on cache misses: one upstream call per key, however many callers miss at once.

Two levels:

* **In this process**, concurrent callers of one key share one :class:`asyncio.Task` (the first
  starts it, the others await it). The task is shielded: a caller that goes away does not cancel
  the call the others wait for.
* **Across processes**, the task takes a short :class:`~domain.ports.FillLocks` lock on the key.
  The holder calls the upstream and fills the cache; a process that finds the lock held polls the
  cache (back-off from ``poll_s`` to ``max_poll_s``) for at most ``wait_s``. When the lock frees
  without a cached value (the holder failed or died and its lock expired) it takes the lock and
  calls itself; when ``wait_s`` passes with the holder still busy, it calls without the lock.

The cache is read again right after the lock is taken: a holder fills the cache before it
releases, so a process that takes a just-released lock finds the value instead of paying again.
Only misses come here; a cache hit never touches this code.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from domain.ports import DossierCache, FillLocks

__all__ = ["SingleFlight"]


class SingleFlight:
    """Coalesces concurrent misses of one cache key into one upstream call.

    Args:
        cache: The shared cache the result is written to (and read by waiting processes).
        locks: Cross-process fill locks; ``None`` coalesces within this process only.
        wait_s: How long a process waits for another's result before calling itself.
        poll_s: First interval between cache reads while waiting (doubles each time).
        max_poll_s: Longest interval between cache reads.
    """

    __slots__ = ("_cache", "_inflight", "_locks", "_max_poll_s", "_poll_s", "_wait_s")

    def __init__(
        self,
        cache: DossierCache,
        locks: FillLocks | None,
        *,
        wait_s: float = 5.0,
        poll_s: float = 0.02,
        max_poll_s: float = 0.25,
    ) -> None:
        self._cache = cache
        self._locks = locks
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._max_poll_s = max_poll_s
        self._inflight: dict[str, asyncio.Task[bytes]] = {}

    @property
    def in_flight(self) -> int:
        """Keys being filled by this process now."""
        return len(self._inflight)

    async def load(self, key: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """The value of ``key`` after a cache miss: fetched once, stored, shared.

        Raises:
            Whatever ``fetch`` raised, to every caller that shared the call.
        """
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fill(key, fetch))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[bytes]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left

    async def _fetch_and_put(self, key: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        raw = await fetch()
        await self._cache.put(key, raw)
        return raw

    async def _fill(self, key: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        locks = self._locks
        if locks is None:
            return await self._fetch_and_put(key, fetch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        delay = self._poll_s
        while True:
            if await locks.acquire(key):
                try:
                    cached = await self._cache.get(key)
                    if cached is not None:
                        return cached
                    return await self._fetch_and_put(key, fetch)
                finally:
                    await locks.release(key)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, self._max_poll_s)
            cached = await self._cache.get(key)
            if cached is not None:
                return cached
        # The holder is alive but slower than we may wait: answer on our own.
        return await self._fetch_and_put(key, fetch)
