"""The circuit breaker: the shared state through Redis when given a client, else per process.

While Redis decides, each process caches the shared state for ``cache_ttl_s``, buffers CLOSED
outcomes and flushes them from one background task; when Redis fails, the per-process machine
(:class:`~infra.breaker.local.LocalBreakerCore`) decides until a background probe finds Redis
again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import structlog

from infra.breaker.local import LocalBreakerCore
from infra.breaker.permit import Guard, Permit
from infra.breaker.settings import BreakerConfig, default_breaker_config
from infra.breaker.shared import REDIS_ERRORS, SharedState, SharedView
from infra.breaker.state import (
    FAILED,
    SLOW,
    STATES_BY_CODE,
    BreakerListener,
    BreakerOpen,
    BreakerSnapshot,
    BreakerState,
    NullListener,
)
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from infra.redisclient import RedisClient

__all__ = ["CircuitBreaker"]

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Outcomes per RECORD call: keeps each script short so it never blocks Redis noticeably.
_FLUSH_CHUNK = 500


def _always_failure(exc: BaseException) -> bool:
    return True


class CircuitBreaker:
    """A named breaker; shared through Redis when given a client, else per process.

    Args:
        name: Bounded dependency name (``c2s``, ``diretrix``, ``work_api``, ``postgres``...);
            it names the Redis keys, the ``DependencyUnavailable`` and the metrics.
        config: Thresholds and timings (default: :func:`default_breaker_config` of ``name``).
        redis: A ``redis.asyncio`` client (not owned: the caller closes it). None = local only.
        key_prefix: Prefix of every Redis key (the app's ``REDIS_KEY_PREFIX``).
        listener: Metric/tracing hooks.
        is_failure: Decides whether an exception raised inside :meth:`guard` counts as a
            failure (default: all of them).
        clock: Monotonic seconds, for durations, waits and the local window (injectable).
        wall_clock: Epoch seconds, for the shared time-based window buckets.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        redis: RedisClient | None = None,
        key_prefix: str = "",
        listener: BreakerListener | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config if config is not None else default_breaker_config(name)
        self._redis = redis
        self._listener: BreakerListener = listener if listener is not None else NullListener()
        self._is_failure = is_failure if is_failure is not None else _always_failure
        self._clock = clock
        self._wall_clock = wall_clock
        self._local = LocalBreakerCore(self.config)
        self._last_state = BreakerState.CLOSED
        self._view: SharedView | None = None
        self._buffer: deque[tuple[int, int]] = deque(maxlen=self.config.max_buffered)
        self._flush_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[SharedView | None] | None = None
        self._recover_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._degraded = False
        self._retry_redis_at = 0.0
        self._closed = False
        self._shared = (
            SharedState(redis, key_prefix, name, self.config) if redis is not None else None
        )

    # -- public API ------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True when Redis backs this breaker (even if currently degraded)."""
        return self._redis is not None

    @property
    def degraded(self) -> bool:
        """True while Redis is unusable and the per-process fallback decides."""
        return self._degraded

    @property
    def state(self) -> BreakerState:
        """The state as this process currently sees it (cached copy when shared)."""
        if self._uses_redis() and self._view is not None:
            view = self._view
            if view.state is BreakerState.OPEN and self._clock() >= view.open_until:
                return BreakerState.HALF_OPEN
            return view.state
        state = self._local.state
        if state is BreakerState.OPEN and self._local.open_remaining(self._clock()) == 0.0:
            return BreakerState.HALF_OPEN
        return state

    def snapshot(self) -> BreakerSnapshot:
        """State and this process's recent rates, for gauges."""
        total, failed, slow = self._local.window_snapshot(self._clock())
        return BreakerSnapshot(
            name=self.name,
            state=self.state,
            degraded=self._degraded,
            calls=total,
            failure_rate=100.0 * failed / total if total else 0.0,
            slow_call_rate=100.0 * slow / total if total else 0.0,
        )

    def guard(self) -> Guard:
        """Async context manager protecting one call.

        Raises:
            BreakerOpen: On entry, when the call is rejected.
        """
        return Guard(self)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` under the breaker.

        Raises:
            BreakerOpen: When the call is rejected (``fn`` is not called).
        """
        async with self.guard():
            return await fn(*args, **kwargs)

    async def acquire(self) -> Permit:
        """Take a permit for one call (low level: report with the permit's methods).

        Raises:
            BreakerOpen: When the breaker rejects the call.
        """
        now = self._clock()
        if not self._uses_redis():
            return self._acquire_local(now)
        view = self._view
        if view is None or now - view.fetched_at >= self.config.cache_ttl_s:
            view = await self._refresh()
            now = self._clock()
            if view is None:
                return self._acquire_local(now)
        state = view.state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return Permit(self, state, view.epoch, True, now)
        if state is BreakerState.FORCED_OPEN:
            raise self._reject(state, self.config.wait_in_open_s)
        if state is BreakerState.OPEN and now < view.open_until:
            raise self._reject(state, view.open_until - now)
        if view.probes_full_until > now:
            raise self._reject(BreakerState.HALF_OPEN, view.probes_full_until - now)
        return await self._acquire_shared_probe()

    async def sync(self) -> BreakerState:
        """Re-read the shared state now and return the state this process sees.

        For the state export: a process that has not called the dependency for a while must
        still report the fleet's state (half-open, closed again), not the last one it saw.
        Redis trouble degrades the breaker as any other script would; a per-process breaker
        just answers its own state.
        """
        if self._uses_redis():
            await self._refresh()
        return self.state

    async def flush(self) -> None:
        """Wait until buffered outcomes reached Redis (tests, shutdown)."""
        while self._uses_redis() and (self._buffer or self._busy(self._flush_task)):
            if not self._busy(self._flush_task):
                self._schedule_flush()
            task = self._flush_task
            if task is not None:
                await asyncio.shield(task)

    async def force_open(self) -> None:
        """Operator action: reject everything until :meth:`reset`."""
        await self._transition(BreakerState.FORCED_OPEN, "forced_open")

    async def disable(self) -> None:
        """Operator action: let everything through, record nothing, until :meth:`reset`."""
        await self._transition(BreakerState.DISABLED, "disabled")

    async def reset(self) -> None:
        """Back to CLOSED with an empty window (ends FORCED_OPEN / DISABLED too)."""
        await self._transition(BreakerState.CLOSED, "closed")

    async def trip(self) -> None:
        """Open now, for the normal wait (e.g. a health check found the dependency dead)."""
        await self._transition(BreakerState.OPEN, "open")

    async def aclose(self) -> None:
        """Flush what is buffered (bounded by the Redis timeout) and stop background tasks."""
        if self._closed:
            return
        if self._uses_redis() and (self._buffer or self._busy(self._flush_task)):
            try:
                async with asyncio.timeout(self.config.redis_timeout_s * 4):
                    await self.flush()
            except TimeoutError:
                log.warning("circuit_breaker_flush_abandoned", breaker=self.name)
        self._closed = True
        tasks = [
            t
            for t in (self._flush_task, self._refresh_task, self._recover_task, *self._background)
            if t is not None and not t.done()
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
            except Exception:  # shutting down: the error was logged where it happened
                log.debug("circuit_breaker_task_error_at_close", breaker=self.name)

    # -- local path ------------------------------------------------------------------------

    def _uses_redis(self) -> bool:
        return self._redis is not None and not self._degraded and not self._closed

    def _acquire_local(self, now: float) -> Permit:
        if self._degraded and now >= self._retry_redis_at and not self._closed:
            self._start_recovery(now)
        decision = self._local.try_acquire(now)
        self._notify(self._local.state)
        if not decision.permitted:
            raise self._reject(decision.state, decision.retry_after)
        return Permit(self, decision.state, decision.epoch, False, now)

    def _reject(self, state: BreakerState, retry_after: float) -> BreakerOpen:
        try:
            self._listener.on_rejected(self.name, state)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="rejected")
        return BreakerOpen(self.name, max(0.0, retry_after), state)

    async def _record(self, permit: Permit, failed: bool, duration: float) -> None:
        slow = duration > self.config.slow_call_duration_s
        try:
            self._listener.on_call(self.name, failed=failed, slow=slow, duration_s=duration)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="call")
        if permit.phase is BreakerState.DISABLED:
            return
        code = (FAILED if failed else 0) | (SLOW if slow else 0)
        now = self._clock()
        if not self._uses_redis():
            if permit.shared:
                # Permitted by the shared state before Redis went away: still evidence for
                # the local window (a half-open shared probe proves nothing locally).
                if permit.phase is BreakerState.CLOSED:
                    self._local.record(code, BreakerState.CLOSED, self._local.epoch, now)
            else:
                self._local.record(code, permit.phase, permit.epoch, now)
            self._notify(self._local.state)
            return
        view = self._view
        if permit.shared:
            epoch = permit.epoch
        elif permit.phase is BreakerState.CLOSED and view is not None:
            epoch = view.epoch  # permitted locally while degraded: counts for the current window
        else:
            return
        if permit.phase is BreakerState.CLOSED:
            self._local.observe(code, now)
            self._buffer.append((epoch, code))
            self._schedule_flush()
        else:
            await self._send_outcomes("h", epoch, str(code))

    def _release(self, permit: Permit) -> None:
        if permit.phase is not BreakerState.HALF_OPEN:
            return
        if not permit.shared:
            self._local.release(permit.phase, permit.epoch)
        elif self._uses_redis():
            # Fire and forget: we may be inside a cancellation, where awaiting is unwelcome.
            epoch = permit.epoch
            self._spawn(self._run(lambda shared: shared.release(epoch)))

    # -- shared path -----------------------------------------------------------------------

    @staticmethod
    def _busy(task: asyncio.Task[Any] | None) -> bool:
        return task is not None and not task.done()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self, script: Callable[[SharedState], Awaitable[list[int]]]) -> list[int] | None:
        """Run one script with the Redis timeout; on Redis trouble degrade and return None."""
        if self._shared is None:
            return None
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                return await script(self._shared)
        except REDIS_ERRORS as exc:
            self._enter_degraded(exc)
            return None

    def _apply(self, reply: list[int], now: float, permits_used: int | None = None) -> SharedView:
        code, epoch, millis, _flag = reply
        state = STATES_BY_CODE[code]
        open_until = now + millis / 1000.0 if state is BreakerState.OPEN else 0.0
        view = SharedView(state, epoch, open_until, now)
        if (
            state is BreakerState.HALF_OPEN
            and permits_used is not None
            and permits_used >= self.config.permitted_calls_in_half_open
        ):
            view.probes_full_until = now + self.config.cache_ttl_s
        self._set_view(view, now)
        return view

    def _set_view(self, view: SharedView, now: float) -> None:
        self._view = view
        if not self._degraded and self._local.state is not view.state:
            # Keep the local machine in step with the shared one: its window is the fallback
            # if Redis goes away, and it must restart where the shared window restarted.
            open_for = view.open_until - now if view.state is BreakerState.OPEN else None
            self._local.transition(view.state, now, open_for=open_for)
        self._notify(view.state)

    async def _refresh(self) -> SharedView | None:
        # One refresh in flight per breaker: a burst after the cache expired costs one script.
        task = self._refresh_task
        if task is None or task.done():
            task = asyncio.ensure_future(self._do_refresh())
            self._refresh_task = task
        return await asyncio.shield(task)

    async def _do_refresh(self) -> SharedView | None:
        reply = await self._run(SharedState.read)
        if reply is None:
            return None
        return self._apply(reply, self._clock(), permits_used=reply[3])

    async def _acquire_shared_probe(self) -> Permit:
        reply = await self._run(SharedState.acquire)
        now = self._clock()
        if reply is None:
            return self._acquire_local(now)
        code, epoch, millis, granted = reply
        state = STATES_BY_CODE[code]
        view = SharedView(
            state, epoch, now + millis / 1000.0 if state is BreakerState.OPEN else 0.0, now
        )
        if state is BreakerState.HALF_OPEN and not granted:
            # Every probe is out: reject locally for a while instead of asking Redis per call.
            view.probes_full_until = now + min(self.config.cache_ttl_s, max(millis / 1000.0, 0.001))
        self._set_view(view, now)
        if granted:
            return Permit(self, state, epoch, True, now)
        if state is BreakerState.OPEN:
            raise self._reject(state, millis / 1000.0)
        if state is BreakerState.FORCED_OPEN:
            raise self._reject(state, self.config.wait_in_open_s)
        raise self._reject(state, view.probes_full_until - now)

    def _schedule_flush(self) -> None:
        if not self._busy(self._flush_task):
            self._flush_task = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._buffer and self._uses_redis():
            batch = list(self._buffer)
            self._buffer.clear()
            start = 0
            while start < len(batch):
                epoch = batch[start][0]
                end = start
                digits: list[str] = []
                while end < len(batch) and batch[end][0] == epoch and len(digits) < _FLUSH_CHUNK:
                    digits.append(str(batch[end][1]))
                    end += 1
                if not await self._send_outcomes("c", epoch, "".join(digits)):
                    return  # degraded: the local window already holds these outcomes
                start = end

    async def _send_outcomes(self, phase: str, epoch: int, digits: str) -> bool:
        now_s = self._wall_clock()
        reply = await self._run(lambda shared: shared.record(phase, epoch, digits, now_s))
        if reply is None:
            return False
        self._apply(reply, self._clock())
        return True

    async def _transition(self, target: BreakerState, lua_target: str) -> None:
        now = self._clock()
        if self._uses_redis():
            reply = await self._run(lambda shared: shared.transition(lua_target))
            if reply is not None:
                self._buffer.clear()
                self._apply(reply, self._clock())
                return
        self._local.transition(target, now)
        self._notify(self._local.state)

    # -- degradation and recovery ----------------------------------------------------------

    def _enter_degraded(self, exc: BaseException) -> None:
        now = self._clock()
        self._retry_redis_at = now + self.config.redis_retry_interval_s
        if self._degraded:
            return
        self._degraded = True
        self._buffer.clear()
        view = self._view
        if view is not None and view.state is not self._local.state:
            # Seed the local machine with the last shared state we saw.
            remaining = max(0.0, view.open_until - now) if view.state is BreakerState.OPEN else None
            self._local.transition(view.state, now, open_for=remaining)
        # Outcomes mirrored while Redis decided may already warrant a trip on their own.
        self._local.evaluate(now)
        self._notify(self._local.state)
        log.warning("circuit_breaker_storage_degraded", breaker=self.name, error=type(exc).__name__)
        try:
            self._listener.on_storage_degraded(self.name, True)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="degraded")
        # Probe in the background, not only when a call comes: a breaker that no call reaches
        # must still leave the degraded state (and its gauge) once Redis is back.
        self._start_recovery(now)

    def _start_recovery(self, now: float) -> None:
        self._retry_redis_at = now + self.config.redis_retry_interval_s
        if not self._busy(self._recover_task):
            # Probes on a timer, part of no request: untraced (the task copies this context).
            with untraced():
                self._recover_task = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        """Probe Redis every ``redis_retry_interval_s`` until it answers or the breaker closes."""
        while self._degraded and not self._closed:
            await asyncio.sleep(max(0.0, self._retry_redis_at - self._clock()))
            if self._degraded and not self._closed and await self._probe_redis():
                return

    async def _probe_redis(self) -> bool:
        """One recovery attempt: True when the shared state decides again."""
        shared = self._shared
        if shared is None:
            return True
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.redis_timeout_s):
                reply = await shared.read()
                now = self._clock()
                local_state = self._local.state
                if reply[0] == BreakerState.CLOSED.code and local_state is BreakerState.OPEN:
                    # The dependency failed while Redis was away: tell the other workers.
                    wait_ms = max(1, int(self._local.open_remaining(now) * 1000))
                    reply = await shared.transition("open_if_closed", wait_ms)
        except REDIS_ERRORS:
            self._retry_redis_at = self._clock() + cfg.redis_retry_interval_s
            return False
        self._degraded = False
        # The shared state decides again (the local machine falls in step in _set_view).
        self._apply(reply, self._clock())
        log.info("circuit_breaker_storage_recovered", breaker=self.name)
        try:
            self._listener.on_storage_degraded(self.name, False)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="degraded")
        return True

    def _notify(self, state: BreakerState) -> None:
        old = self._last_state
        if state is old:
            return
        self._last_state = state
        log.info("circuit_breaker_state_changed", breaker=self.name, old=old.value, new=state.value)
        try:
            self._listener.on_state_change(self.name, old, state)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="state")
