"""The audit trail's buffer and flush policy (:class:`infra.db.audit.BufferedAuditTrail`) over a
fake writer and a fake clock: when it writes, how much per statement, what it keeps while
PostgreSQL is down and what it drops past its bound."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING

import pytest

from domain.audit import AccessRecord
from domain.errors import DependencyUnavailable
from infra.db.audit import BufferedAuditTrail
from observability.metrics import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Sequence

T0 = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def rec(n: int) -> AccessRecord:
    return AccessRecord(
        at=T0 + dt.timedelta(seconds=n),
        tenant="t",
        key_id=None,
        operation="lookup",
        subject=f"s{n}",
    )


class Database:
    """Where the writes go: each call is one statement; ``down`` makes it fail like an outage."""

    def __init__(self) -> None:
        self.statements: list[list[AccessRecord]] = []
        self.down = False

    async def write(self, records: Sequence[AccessRecord]) -> None:
        if self.down:
            raise DependencyUnavailable("postgres", "postgres unavailable (OSError)")
        self.statements.append(list(records))

    @property
    def rows(self) -> list[str]:
        return [r.subject for batch in self.statements for r in batch]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def trail(db: Database, clock: Clock, **kwargs: int) -> BufferedAuditTrail:
    return BufferedAuditTrail(db.write, flush_s=0.2, clock=clock, **kwargs)


def dropped_total() -> float:
    return REGISTRY.get_sample_value("audit_records_dropped_total") or 0.0


async def test_records_wait_for_the_flush_period_then_go_in_one_statement() -> None:
    db, clock = Database(), Clock()
    buffer = trail(db, clock, batch=500)
    for n in range(3):
        buffer.record(rec(n))
    assert not buffer.due()
    clock.t += 0.15
    assert not buffer.due()
    clock.t += 0.1
    assert buffer.due()
    assert await buffer.write_batch() == 3
    assert db.statements == [[rec(0), rec(1), rec(2)]]
    assert buffer.pending == 0
    assert not buffer.due()


async def test_a_full_batch_is_due_at_once_and_a_write_never_exceeds_the_batch() -> None:
    db, clock = Database(), Clock()
    buffer = trail(db, clock, batch=4)
    for n in range(10):
        buffer.record(rec(n))
    assert buffer.due()  # no time has passed
    assert await buffer.write_batch() == 4
    await buffer.flush()
    assert [len(s) for s in db.statements] == [4, 4, 2]
    assert db.rows == [f"s{n}" for n in range(10)]


async def test_an_outage_keeps_the_records_in_order_and_backs_off() -> None:
    db, clock = Database(), Clock()
    buffer = trail(db, clock, batch=2)
    for n in range(3):
        buffer.record(rec(n))
    db.down = True
    assert await buffer.write_batch() == 0
    assert buffer.pending == 3
    assert not buffer.due()  # backing off, though a full batch waits
    clock.t += 5.0
    assert buffer.due()
    db.down = False
    await buffer.flush()
    assert db.rows == ["s0", "s1", "s2"]  # nothing lost, oldest first


async def test_past_its_bound_the_buffer_drops_the_oldest_and_counts_them() -> None:
    db, clock = Database(), Clock()
    buffer = trail(db, clock, batch=2, max_records=5)
    db.down = True
    before = dropped_total()
    for n in range(8):
        buffer.record(rec(n))
        await buffer.write_batch()  # fails: the batch goes back in front
    assert buffer.pending == 5
    assert buffer.dropped == 3
    assert dropped_total() - before == 3
    db.down = False
    clock.t += 10
    await buffer.flush()
    assert db.rows == ["s3", "s4", "s5", "s6", "s7"]


def test_recording_never_awaits() -> None:
    buffer = trail(Database(), Clock())
    buffer.record(rec(0))  # a plain call (no coroutine to await): appended at once
    assert buffer.pending == 1


async def test_the_background_writes_run_and_leaving_writes_everything() -> None:
    db = Database()
    buffer = BufferedAuditTrail(db.write, flush_s=0.02, batch=1000)
    async with buffer.running():
        buffer.record(rec(0))
        for _ in range(200):
            if db.rows:
                break
            await asyncio.sleep(0.01)
        assert db.rows == ["s0"]  # written by the background task within the period
        for n in range(1, 4):
            buffer.record(rec(n))
    # Leaving (the drain) wrote what was still buffered.
    assert db.rows == ["s0", "s1", "s2", "s3"]


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        BufferedAuditTrail(Database().write, batch=0)
