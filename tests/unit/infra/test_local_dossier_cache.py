"""The in-memory dossier cache's bounds, expiry and invalidation rules (no Redis needed)."""

from __future__ import annotations

import redis.asyncio as aioredis

from infra.localcache import ENTRY_OVERHEAD_BYTES, LocalDossierCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Listener:
    def __init__(self) -> None:
        self.evictions: dict[str, int] = {}
        self.sizes: list[tuple[int, int]] = []

    def held(self, entries: int, nbytes: int) -> None:
        self.sizes.append((entries, nbytes))

    def evicted(self, reason: str, count: int) -> None:
        self.evictions[reason] = self.evictions.get(reason, 0) + count

    def invalidated(self, reason: str, count: int) -> None:
        return None

    def serving(self, active: bool) -> None:
        return None


def cache(
    max_bytes: int = 1 << 20, max_entries: int = 100, listener: Listener | None = None
) -> tuple[LocalDossierCache, Clock]:
    clock = Clock()
    local = LocalDossierCache(
        aioredis.Redis(),  # not connected: these tests never start the listener
        "c:wa:invalidated",
        max_bytes=max_bytes,
        max_entries=max_entries,
        stale_bound_s=1.0,
        listener=listener or Listener(),
        clock=clock,
    )
    return local, clock


def test_the_byte_bound_evicts_the_least_recently_used() -> None:
    entry = 1000 + ENTRY_OVERHEAD_BYTES
    listener = Listener()
    local, _ = cache(max_bytes=3 * entry, listener=listener)
    for name in "abc":
        local.write(name, b"x" * 1000, 60)
    assert local.get("a") is not None  # a is now the most recent
    local.write("d", b"x" * 1000, 60)
    assert local.get("b") is None
    assert [local.get(n) is not None for n in "acd"] == [True, True, True]
    assert local.nbytes == 3 * entry
    local.write("e", b"x" * 1500, 60)  # needs two slots
    assert len(local) == 2
    assert local.nbytes <= 3 * entry
    assert listener.evictions == {"size": 3}
    assert listener.sizes[-1] == (2, local.nbytes)  # the bytes gauge follows


def test_the_entry_bound_holds_and_oversized_bodies_are_not_kept() -> None:
    local, _ = cache(max_bytes=10_000, max_entries=2)
    for name in "abc":
        local.write(name, b"x", 60)
    assert len(local) == 2
    local.write("a", b"y" * 20_000, 60)
    assert local.get("a") is None
    assert local.nbytes == 2 * (1 + ENTRY_OVERHEAD_BYTES)


def test_entries_expire_with_the_ttl_they_were_given() -> None:
    local, clock = cache()
    assert local.fill("a", b"A", 5.0, local.epoch)
    clock.now += 4.9
    assert local.get("a") == b"A"
    clock.now += 0.2
    assert local.get("a") is None
    assert len(local) == 0
    assert not local.fill("b", b"B", 0, local.epoch)  # no TTL left: nothing kept


def test_a_read_started_before_an_invalidation_keeps_nothing() -> None:
    local, _ = cache()
    local.write("a", b"old", 60)
    epoch = local.epoch  # a Redis read starts here...
    assert local.invalidate("a")  # ...a rewrite elsewhere is announced...
    assert not local.fill("a", b"old", 60, epoch)  # ...the old body read is not kept
    assert local.get("a") is None
    epoch = local.epoch
    local.write("b", b"new", 60)  # a local rewrite also voids reads in flight
    assert not local.fill("a", b"old", 60, epoch)
    epoch = local.epoch
    local.clear()
    assert not local.fill("a", b"old", 60, epoch)
    assert local.fill("a", b"new", 60, local.epoch)


def test_memory_answers_only_once_the_channel_is_confirmed() -> None:
    local, _ = cache()
    local.write("a", b"A", 60)
    assert not local.serving()  # no listener: never confirmed
    assert local.get("a") == b"A"  # held, but the caller asks serving() first
