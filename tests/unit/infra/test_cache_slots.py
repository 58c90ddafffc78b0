"""The Lua scripts of the Redis adapters touch keys of ONE Redis Cluster hash slot.

A script given keys of two slots fails on a cluster (CROSSSLOT). The adapters are driven through
their real code with a recording stand-in of the redis client, and the slot of every key each
script was given is computed as Redis Cluster does (``redis.crc.key_slot``: CRC16 of the
``{hash tag}``).
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from domain.tenancy import current_tenant
from infra.cache import KeySpace
from infra.locks import RedisFillLocks, RedisLeadLocks, RedisRecentCpfs
from infra.sealing import AeadEnvelope

KEYS = [("k1", b"secret-0123456789-abcdef")]


class _Script:
    def __init__(self, calls: list[tuple[str, list[str]]], source: str, reply: Any) -> None:
        self._calls = calls
        self._source = source
        self._reply = reply

    async def __call__(self, keys: list[str], args: list[object]) -> Any:
        self._calls.append((self._source, list(keys)))
        return self._reply


class RecordingRedis:
    """Records the keys given to scripts and to MGET; answers like an empty Redis."""

    def __init__(self) -> None:
        self.script_calls: list[tuple[str, list[str]]] = []
        self.mget_calls: list[list[str]] = []

    def register_script(self, source: str) -> _Script:
        reply: Any = [1] if "'NX'" in source else 1
        return _Script(self.script_calls, source, reply)

    async def set(self, *args: object, **kwargs: object) -> bool:
        return True

    async def mget(self, names: list[str]) -> list[None]:
        self.mget_calls.append(list(names))
        return [None for _ in names]


def _slots(keys: list[str]) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


@pytest.mark.parametrize("tenant", [None, "acme", "tenant-with-{braces}"])
async def test_the_lead_lock_scripts_touch_one_slot(tenant: str | None) -> None:
    redis = RecordingRedis()
    locks = RedisLeadLocks(
        redis,  # type: ignore[arg-type]  # the recording stand-in of the client
        KeySpace("c2s:", b"salt"),
        AeadEnvelope(KEYS, purpose="lead_replay"),
        300,
        60,
    )
    token = current_tenant.set(tenant)
    try:
        for lead in ("1", "lead-42", "a-much-longer-lead-id-0123456789"):
            assert (await locks.acquire(lead)).acquired
            await locks.finish(lead, b'{"success":true}')
    finally:
        current_tenant.reset(token)
    assert len(redis.script_calls) == 6  # acquire and finish of each lead
    for _source, keys in redis.script_calls:
        assert len(keys) == 2
        assert len(_slots(keys)) == 1, keys


async def test_the_fill_lock_release_script_touches_one_slot() -> None:
    redis = RecordingRedis()
    locks = RedisFillLocks(redis, KeySpace("c2s:", b"salt"), 5.0)  # type: ignore[arg-type]
    for key in ("cpf:52998224725", "module:cep:01001000"):
        assert await locks.acquire(key)
        await locks.release(key)
    assert len(redis.script_calls) == 2
    for _source, keys in redis.script_calls:
        assert len(_slots(keys)) == 1, keys


async def test_one_tenants_recent_cpf_marks_are_read_and_written_in_one_slot() -> None:
    redis = RecordingRedis()
    recent = RedisRecentCpfs(redis, KeySpace("c2s:", b"salt"), 60)  # type: ignore[arg-type]
    cpfs = ["52998224725", "39053344705", "71460238001"]
    token = current_tenant.set("acme")
    try:
        await recent.mark(cpfs)
        assert await recent.recent(cpfs) == set()  # the stand-in stores nothing
    finally:
        current_tenant.reset(token)
    assert len(redis.mget_calls) == 1
    assert len(_slots(redis.mget_calls[0])) == 1
    assert len(redis.script_calls) == 1
    _source, marked = redis.script_calls[0]
    assert len(marked) == 3
    assert _slots(marked) == _slots(redis.mget_calls[0])
