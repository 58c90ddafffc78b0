"""The breaker's state machine, per process, driven by a fake clock (no Redis, no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from infra.breaker import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    LocalBreakerCore,
    NullListener,
    default_breaker_config,
)


class FakeClock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder(NullListener):
    def __init__(self) -> None:
        self.transitions: list[tuple[BreakerState, BreakerState]] = []
        self.rejected: list[BreakerState] = []
        self.calls: list[tuple[bool, bool]] = []

    def on_state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.transitions.append((old, new))

    def on_rejected(self, name: str, state: BreakerState) -> None:
        self.rejected.append(state)

    def on_call(self, name: str, *, failed: bool, slow: bool, duration_s: float) -> None:
        self.calls.append((failed, slow))


class Boom(Exception):
    pass


class Harmless(Exception):
    pass


CONFIG = BreakerConfig(
    window_size=4,
    minimum_calls=4,
    failure_rate_threshold=50,
    slow_call_rate_threshold=100,
    slow_call_duration_s=1.0,
    wait_in_open_s=10,
    permitted_calls_in_half_open=2,
    max_wait_in_half_open_s=30,
)


def make(
    config: BreakerConfig = CONFIG, clock: FakeClock | None = None
) -> tuple[CircuitBreaker, FakeClock, Recorder]:
    clock = clock or FakeClock()
    recorder = Recorder()
    breaker = CircuitBreaker(
        "dep",
        config,
        listener=recorder,
        clock=clock,
        is_failure=lambda exc: not isinstance(exc, Harmless),
    )
    return breaker, clock, recorder


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state


async def ok(breaker: CircuitBreaker, clock: FakeClock | None = None, took: float = 0.0) -> None:
    async with breaker.guard():
        if clock is not None:
            clock.advance(took)


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker.guard():
                raise Boom


# ---- closed: window maths ------------------------------------------------------------------


async def test_no_trip_below_minimum_calls_even_if_all_failed() -> None:
    breaker, _, _ = make()
    await fail(breaker, 3)
    assert state(breaker) is BreakerState.CLOSED


async def test_trips_when_the_failure_rate_reaches_the_threshold() -> None:
    breaker, _, recorder = make()
    await ok(breaker)
    await ok(breaker)
    await fail(breaker, 2)  # 2 of 4 = 50 % >= 50 %
    assert state(breaker) is BreakerState.OPEN
    assert recorder.transitions == [(BreakerState.CLOSED, BreakerState.OPEN)]


async def test_stays_closed_below_the_threshold() -> None:
    breaker, _, _ = make()
    for _ in range(3):
        await ok(breaker)
    await fail(breaker)  # 25 %
    assert state(breaker) is BreakerState.CLOSED


async def test_count_window_forgets_the_oldest_outcomes() -> None:
    breaker, _, _ = make()
    await fail(breaker)
    for _ in range(4):
        await ok(breaker)  # the failure slid out of the 4-call window
    await fail(breaker)  # 1 of the last 4
    assert state(breaker) is BreakerState.CLOSED
    await fail(breaker)  # 2 of the last 4
    assert state(breaker) is BreakerState.OPEN


async def test_minimum_calls_is_capped_by_a_count_window() -> None:
    config = BreakerConfig(window_size=3, minimum_calls=100)
    assert config.effective_minimum_calls == 3
    breaker, _, _ = make(config)
    await fail(breaker, 3)
    assert state(breaker) is BreakerState.OPEN


async def test_time_window_only_counts_the_last_n_seconds() -> None:
    config = BreakerConfig(window_type="time_based", window_size=10, minimum_calls=4)
    breaker, clock, _ = make(config)
    await fail(breaker, 3)
    clock.advance(11)  # those failures are now outside the 10 s window
    await ok(breaker)
    await fail(breaker)
    assert state(breaker) is BreakerState.CLOSED
    await fail(breaker)
    await ok(breaker)  # 4 calls in the window, 2 failed
    assert state(breaker) is BreakerState.OPEN


async def test_time_window_has_no_cap_on_minimum_calls() -> None:
    config = BreakerConfig(window_type="time_based", window_size=2, minimum_calls=5)
    assert config.effective_minimum_calls == 5


async def test_slow_successes_trip_on_the_slow_call_rate() -> None:
    config = BreakerConfig(
        window_size=4, minimum_calls=4, slow_call_rate_threshold=75, slow_call_duration_s=1.0
    )
    breaker, clock, recorder = make(config)
    await ok(breaker, clock, took=0.5)
    for _ in range(2):
        await ok(breaker, clock, took=1.5)
    assert state(breaker) is BreakerState.CLOSED
    await ok(breaker, clock, took=2.0)  # 3 of 4 slow = 75 %
    assert state(breaker) is BreakerState.OPEN
    assert recorder.calls == [(False, False), (False, True), (False, True), (False, True)]


async def test_exceptions_the_predicate_accepts_count_as_successes() -> None:
    breaker, _, recorder = make()
    for _ in range(4):
        with pytest.raises(Harmless):
            async with breaker.guard():
                raise Harmless
    assert state(breaker) is BreakerState.CLOSED
    assert recorder.calls == [(False, False)] * 4


async def test_explicit_marks_override_the_predicate() -> None:
    breaker, _, _ = make()

    async def harmless_but_marked() -> None:
        async with breaker.guard() as permit:
            permit.mark_failure()
            raise Harmless

    for _ in range(4):
        with pytest.raises(Harmless):
            await harmless_but_marked()
    assert state(breaker) is BreakerState.OPEN


# ---- open and half-open --------------------------------------------------------------------


async def tripped() -> tuple[CircuitBreaker, FakeClock, Recorder]:
    breaker, clock, recorder = make()
    await fail(breaker, 4)
    assert state(breaker) is BreakerState.OPEN
    return breaker, clock, recorder


async def test_open_rejects_with_the_time_left_until_half_open() -> None:
    breaker, clock, recorder = await tripped()
    clock.advance(4)
    with pytest.raises(BreakerOpen) as caught:
        await breaker.acquire()
    assert caught.value.dependency == "dep"
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.state is BreakerState.OPEN
    assert recorder.rejected == [BreakerState.OPEN]


async def test_call_helper_does_not_run_the_function_when_open() -> None:
    breaker, _, _ = await tripped()
    ran: list[int] = []

    async def work() -> int:
        ran.append(1)
        return 1

    with pytest.raises(BreakerOpen):
        await breaker.call(work)
    assert ran == []


async def test_half_open_lets_exactly_the_permitted_probes_through() -> None:
    breaker, clock, _ = await tripped()
    clock.advance(10)
    first = await breaker.acquire()
    second = await breaker.acquire()
    assert first.phase is second.phase is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpen) as caught:
        await breaker.acquire()
    assert caught.value.state is BreakerState.HALF_OPEN
    await first.success()
    assert state(breaker) is BreakerState.HALF_OPEN  # waits for every probe
    await second.success()
    assert state(breaker) is BreakerState.CLOSED


async def test_failed_probes_open_the_breaker_again_for_a_full_wait() -> None:
    breaker, clock, recorder = await tripped()
    clock.advance(10)
    await ok(breaker)
    await fail(breaker)  # 1 of 2 probes failed: 50 %
    assert state(breaker) is BreakerState.OPEN
    with pytest.raises(BreakerOpen) as caught:
        await breaker.acquire()
    assert caught.value.retry_after == pytest.approx(10.0)
    assert recorder.transitions == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
    ]


async def test_closing_starts_with_an_empty_window() -> None:
    breaker, clock, _ = await tripped()
    clock.advance(10)
    await ok(breaker)
    await ok(breaker)
    assert state(breaker) is BreakerState.CLOSED
    await fail(breaker, 3)  # below minimum calls again
    assert state(breaker) is BreakerState.CLOSED


async def test_a_cancelled_probe_returns_its_permit() -> None:
    breaker, clock, _ = await tripped()
    clock.advance(10)

    async def hang() -> None:
        async with breaker.guard():
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(hang())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    probes = [await breaker.acquire(), await breaker.acquire()]  # both permits are free
    for probe in probes:
        await probe.success()
    assert state(breaker) is BreakerState.CLOSED


async def test_lost_probes_are_forgotten_after_the_half_open_lease() -> None:
    breaker, clock, _ = await tripped()
    clock.advance(10)
    await breaker.acquire()
    await breaker.acquire()  # both probes never report back
    with pytest.raises(BreakerOpen):
        await breaker.acquire()
    clock.advance(CONFIG.max_wait_in_half_open_s)
    late = await breaker.acquire()
    assert late.phase is BreakerState.HALF_OPEN


async def test_an_outcome_from_before_a_trip_does_not_count_after_it() -> None:
    breaker, clock, _ = make()
    early = await breaker.acquire()  # permitted while closed
    await fail(breaker, 4)
    clock.advance(10)
    probe = await breaker.acquire()
    await early.failure()  # reports late: ignored by the half-open evaluation
    await probe.success()
    await ok(breaker)
    assert state(breaker) is BreakerState.CLOSED


async def test_reporting_twice_counts_once() -> None:
    breaker, _, recorder = make()
    permit = await breaker.acquire()
    await permit.failure()
    await permit.failure()
    assert recorder.calls == [(True, False)]


# ---- operator states -----------------------------------------------------------------------


async def test_forced_open_rejects_until_reset() -> None:
    breaker, clock, _ = make()
    await breaker.force_open()
    clock.advance(3600)
    with pytest.raises(BreakerOpen) as caught:
        await breaker.acquire()
    assert caught.value.state is BreakerState.FORCED_OPEN
    await breaker.reset()
    await ok(breaker)
    assert state(breaker) is BreakerState.CLOSED


async def test_disabled_lets_everything_through_and_records_nothing() -> None:
    breaker, _, _ = make()
    await breaker.disable()
    await fail(breaker, 20)
    assert state(breaker) is BreakerState.DISABLED
    await breaker.reset()
    await fail(breaker, 3)
    assert state(breaker) is BreakerState.CLOSED


async def test_trip_opens_for_the_normal_wait() -> None:
    breaker, clock, _ = make()
    await breaker.trip()
    clock.advance(9.9)
    with pytest.raises(BreakerOpen):
        await breaker.acquire()
    clock.advance(0.1)
    assert (await breaker.acquire()).phase is BreakerState.HALF_OPEN


# ---- snapshot, listeners, config -------------------------------------------------------------


async def test_snapshot_reports_rates_of_the_window() -> None:
    breaker, _, _ = make()
    await ok(breaker)
    await fail(breaker)
    snap = breaker.snapshot()
    assert (snap.calls, snap.failure_rate, snap.slow_call_rate) == (2, 50.0, 0.0)
    assert snap.state is BreakerState.CLOSED
    assert not snap.degraded
    assert not breaker.shared


async def test_a_broken_listener_never_breaks_a_call() -> None:
    class Broken(NullListener):
        def on_call(self, name: str, *, failed: bool, slow: bool, duration_s: float) -> None:
            raise RuntimeError("metrics backend down")

    breaker = CircuitBreaker("dep", CONFIG, listener=Broken(), clock=FakeClock())
    await ok(breaker)


def test_state_codes_follow_resilience4j() -> None:
    assert [s.code for s in BreakerState] == [0, 1, 2, 3, 4]


def test_presets_exist_for_every_dependency() -> None:
    for name in ("c2s", "diretrix", "work_api", "postgres", "redis"):
        assert default_breaker_config(name).slow_call_duration_s > 0
    assert default_breaker_config("other") == BreakerConfig()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size": 0},
        {"minimum_calls": 0},
        {"failure_rate_threshold": 0},
        {"slow_call_rate_threshold": 101},
        {"wait_in_open_s": 0},
        {"permitted_calls_in_half_open": 0},
        {"window_type": "sliding"},
        {"key_ttl_s": 5, "wait_in_open_s": 10},
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_core_transition_to_half_open_allows_probes() -> None:
    core = LocalBreakerCore(CONFIG)
    core.transition(BreakerState.HALF_OPEN, now=0.0)
    assert core.try_acquire(0.0).permitted
    assert core.open_remaining(0.0) == 0.0
