"""The feature flag store: overrides in Redis, read through a short per-process cache.

Implements :class:`domain.ports.Flags` (ADR 0007). Layout: one Redis hash ``<prefix>flags``,
field = flag name, value = a JSON :class:`FlagOverride` (value, when, by whom). A flag without a
field has its default (``domain.flags.DEFAULTS`` as adjusted by the ``FLAG_*`` settings).

Reads never wait for Redis. :meth:`FlagStore.enabled` answers from memory; a background task
(:meth:`FlagStore.running`) re-reads the hash every ``ttl_s`` seconds, so a change made on one
worker is applied by every other worker within the TTL (default 2 s), for the cost of one
``HGETALL`` per TTL per process instead of one round trip per request (each costs 100-200 us of
client CPU on the hot path). Without the task, a read that finds the cache stale
schedules the refresh itself.

When Redis cannot be read, the process keeps the values it last read (an operator's kill switch
must not silently turn back on during a Redis incident); a process that never read them uses the
defaults. ``feature_flag_storage_degraded`` says so. Writes need Redis and fail with
:class:`~domain.errors.DependencyUnavailable` (HTTP 503) rather than pretend.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol, TextIO

import msgspec
import structlog

from domain.errors import DependencyUnavailable
from domain.flags import DEFAULTS, FLAG_SPECS, FlagOverride, FlagState, spec_of
from infra.redisclient import REDIS_ERRORS, connect
from observability.metrics import set_feature_flag, set_feature_flag_storage_degraded
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from infra.redisclient import RedisClient

__all__ = [
    "DEFAULT_TTL_S",
    "FlagOverride",
    "FlagSettings",
    "FlagState",
    "FlagStore",
    "UnknownFlag",
    "defaults_from_settings",
    "flags_command",
]

log = structlog.get_logger(__name__)

DEFAULT_TTL_S: Final = 2.0
_KEY_SUFFIX: Final = "flags"
# What a dead, refusing or hung Redis raises through redis.asyncio (timeouts are bounded by the
# client's socket timeouts, REDIS_TIMEOUT_S).
_REDIS_ERRORS: Final = REDIS_ERRORS


class UnknownFlag(LookupError):
    """A name that is not one of ``domain.flags.Flag``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown feature flag '{name}'")
        self.name = name


class FlagSettings(Protocol):
    """The ``# --- feature flags ---`` block of ``app.config.Settings``."""

    @property
    def flag_send_c2s_messages(self) -> bool: ...
    @property
    def flag_use_dossier_cache(self) -> bool: ...
    @property
    def flag_enable_batch(self) -> bool: ...


def defaults_from_settings(settings: FlagSettings) -> dict[str, bool]:
    """Flag name -> default for this deployment (``FLAG_<NAME>`` settings over the built-ins)."""
    return {
        name: bool(getattr(settings, f"flag_{name}", value)) for name, value in DEFAULTS.items()
    }


class FlagStore:
    """Feature flags with Redis overrides and a per-process cache (:class:`domain.ports.Flags`).

    Args:
        redis: The process's client (its socket timeouts bound every call).
        prefix: The Redis key prefix (``REDIS_KEY_PREFIX``).
        defaults: Flag name -> default; missing names keep the built-in default.
        ttl_s: How old the cached overrides may get before they are read again.
        clock: Monotonic seconds (injectable for tests).
        sleep: Paces the background refresh (``asyncio.sleep``; injectable for tests).
        wall_clock: Seconds since the epoch, stamped on overrides (injectable for tests).

    Raises:
        UnknownFlag: ``defaults`` names a flag that does not exist.
    """

    __slots__ = (
        "_clock",
        "_defaults",
        "_degraded",
        "_generation",
        "_key",
        "_loaded",
        "_overrides",
        "_poller",
        "_read_at",
        "_refreshing",
        "_sleep",
        "_values",
        "_wall_clock",
        "redis",
        "ttl_s",
    )

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        defaults: Mapping[str, bool] | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.ttl_s = max(ttl_s, 0.01)
        self._key = f"{prefix}{_KEY_SUFFIX}"
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        merged = dict(DEFAULTS)
        for name, value in (defaults or {}).items():
            if name not in merged:
                raise UnknownFlag(name)
            merged[name] = value
        self._defaults: Mapping[str, bool] = MappingProxyType(merged)
        self._overrides: dict[str, FlagOverride] = {}
        self._values: dict[str, bool] = dict(merged)
        self._read_at: float | None = None  # last read attempt, successful or not
        self._loaded = False  # whether Redis ever answered
        self._degraded = False
        self._generation = 0  # bumped by local writes, so a read that raced one is discarded
        self._refreshing: asyncio.Task[bool] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._publish(list(merged))

    # --- reads (the hot path) ------------------------------------------------------------------

    def enabled(self, name: str) -> bool:
        """Whether flag ``name`` is on, from memory; schedules a refresh when the cache is stale.

        Raises:
            KeyError: ``name`` is not a known flag (a programming error).
        """
        value = self._values[name]
        read_at = self._read_at
        # With the poller running this is only a safety net (a poller stuck behind a hung
        # Redis); without it, the first read after the TTL triggers the refresh.
        limit = self.ttl_s if self._poller is None else 2 * self.ttl_s
        if (read_at is None or self._clock() - read_at >= limit) and self._refreshing is None:
            self._schedule_refresh()
        return value

    @property
    def degraded(self) -> bool:
        """Whether the last read of the overrides failed."""
        return self._degraded

    @property
    def defaults(self) -> Mapping[str, bool]:
        """Flag name -> default of this deployment."""
        return self._defaults

    def state(self, name: str) -> FlagState:
        """The flag as this process applies it now.

        Raises:
            UnknownFlag: ``name`` is not a known flag.
        """
        if name not in self._defaults:
            raise UnknownFlag(name)
        return FlagState(
            name=name,
            enabled=self._values[name],
            default=self._defaults[name],
            override=self._overrides.get(name),
        )

    def states(self) -> list[FlagState]:
        """Every known flag, in the order of ``domain.flags.FLAG_SPECS``."""
        return [self.state(spec.flag.value) for spec in FLAG_SPECS]

    # --- refresh -------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the overrides from Redis now.

        Returns:
            ``True`` when Redis answered; ``False`` when it did not, in which case the values
            last read (or the defaults) stay in force.
        """
        self._read_at = self._clock()  # a failed read is not retried before another TTL either
        generation = self._generation
        try:
            raw = await self.redis.hgetall(self._key)
        except _REDIS_ERRORS as exc:
            self._set_degraded(True, type(exc).__name__)
            return False
        if generation == self._generation:  # else a local write is newer than what was read
            self._apply(self._decode(raw))
        self._loaded = True
        self._set_degraded(False)
        return True

    def _schedule_refresh(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a sync caller): the values stay as they are
        # Cache upkeep, not the caller's work: untraced (the task copies this context).
        with untraced():
            task = loop.create_task(self.refresh())
        self._refreshing = task
        task.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task[bool]) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            log.error("feature_flags_refresh_failed", error_type=type(task.exception()).__name__)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FlagStore]:
        """Read the overrides now, then every ``ttl_s`` in a background task until exit.

        Neither read is traced: they belong to no request (one root trace per poll otherwise).
        """
        with untraced():
            await self.refresh()
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield self
        finally:
            poller, self._poller = self._poller, None
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            refreshing = self._refreshing
            if refreshing is not None:
                refreshing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refreshing

    async def _poll(self) -> None:
        while True:
            await self._sleep(self.ttl_s)
            try:
                await self.refresh()
            except Exception as exc:  # a bug must not stop the refreshes for good
                log.error("feature_flags_refresh_failed", error_type=type(exc).__name__)

    # --- writes --------------------------------------------------------------------------------

    async def set(self, name: str, enabled: bool, *, actor: str) -> FlagState:
        """Override flag ``name`` for every process (each applies it within ``ttl_s``).

        Args:
            name: The flag.
            enabled: The value to impose.
            actor: Who asks (``api-key:<id>`` or ``cli``); stored and logged.

        Returns:
            The flag's new state in this process (applied here at once).

        Raises:
            UnknownFlag: ``name`` is not a known flag.
            DependencyUnavailable: Redis cannot be written.
        """
        if name not in self._defaults:
            raise UnknownFlag(name)
        override = FlagOverride(enabled=enabled, changed_at=self._wall_clock(), changed_by=actor)
        try:
            await self.redis.hset(self._key, name, msgspec.json.encode(override))
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._generation += 1
        self._apply({**self._overrides, name: override})
        log.info("feature_flag_changed", flag=name, enabled=enabled, actor=actor)
        return self.state(name)

    async def unset(self, name: str, *, actor: str) -> FlagState:
        """Remove the override of ``name``: every process goes back to the default.

        Raises:
            UnknownFlag: ``name`` is not a known flag.
            DependencyUnavailable: Redis cannot be written.
        """
        if name not in self._defaults:
            raise UnknownFlag(name)
        try:
            await self.redis.hdel(self._key, name)
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._generation += 1
        self._apply({k: v for k, v in self._overrides.items() if k != name})
        log.info("feature_flag_reset", flag=name, enabled=self._defaults[name], actor=actor)
        return self.state(name)

    # --- internals -----------------------------------------------------------------------------

    def _decode(self, raw: Mapping[bytes | str, bytes | str]) -> dict[str, FlagOverride]:
        overrides: dict[str, FlagOverride] = {}
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else field
            if spec_of(name) is None:
                continue  # a flag retired from the code: its leftover override means nothing
            try:
                overrides[name] = msgspec.json.decode(value, type=FlagOverride)
            except msgspec.DecodeError:
                # Hand-written garbage must not flip a flag: the default applies until fixed.
                log.warning("feature_flag_override_invalid", flag=name)
        return overrides

    def _apply(self, overrides: dict[str, FlagOverride]) -> None:
        values = dict(self._defaults)
        for name, override in overrides.items():
            values[name] = override.enabled
        changed = [name for name, value in values.items() if self._values.get(name) != value]
        # Swap whole dicts: readers in other tasks never see a half-applied update.
        self._overrides = overrides
        self._values = values
        if changed:
            log.info("feature_flags_applied", changed=changed)
        self._publish(changed)

    def _publish(self, names: list[str]) -> None:
        # Only what changed: a poll that reads the same overrides writes no gauge (cheaper, and
        # a second store in the same process cannot overwrite a fresh value with a stale one).
        for name in names:
            set_feature_flag(name, self._values[name])

    def _set_degraded(self, degraded: bool, error_type: str | None = None) -> None:
        if degraded != self._degraded:
            # Transitions only: a dead Redis is read every TTL and must not flood the logs.
            if degraded:
                log.warning(
                    "feature_flags_storage_degraded",
                    error_type=error_type,
                    using="last_known" if self._loaded else "defaults",
                )
            else:
                log.info("feature_flags_storage_recovered")
        self._degraded = degraded
        set_feature_flag_storage_degraded(degraded)


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    log.warning("feature_flag_write_failed", error_type=type(exc).__name__)
    return DependencyUnavailable("redis", "feature flag store unavailable", retry_after=1.0)


# --- command line (``c2s-api flags``) ----------------------------------------------------------


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _print_states(states: list[FlagState], out: TextIO) -> None:
    print(f"{'flag':<20} {'value':<6} {'default':<8} override", file=out)
    for state in states:
        override = state.override
        detail = "-"
        if override is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(override.changed_at))
            detail = f"{_on_off(override.enabled)} (by {override.changed_by} at {when})"
        print(
            f"{state.name:<20} {_on_off(state.enabled):<6} {_on_off(state.default):<8} {detail}",
            file=out,
        )


async def _flags_command(
    redis: RedisClient,
    *,
    prefix: str,
    defaults: Mapping[str, bool],
    action: str,
    name: str | None,
    value: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    store = FlagStore(redis, prefix=prefix, defaults=defaults)
    try:
        if action == "list":
            if not await store.refresh():
                print("flags: Redis unreachable: these are the defaults", file=err)
                _print_states(store.states(), out)
                return 1
            _print_states(store.states(), out)
            return 0
        if name is None:
            print("flags: a flag name is required", file=err)
            return 2
        if action == "set":
            state = await store.set(name, value == "on", actor="cli")
        else:
            state = await store.unset(name, actor="cli")
    except UnknownFlag as exc:
        print(f"flags: {exc}", file=err)
        return 2
    except DependencyUnavailable:
        print("flags: Redis unreachable: nothing was changed", file=err)
        return 1
    _print_states([state], out)
    print(f"every worker applies it within {store.ttl_s:g}s", file=out)
    return 0


def flags_command(
    redis_url: str,
    *,
    prefix: str,
    defaults: Mapping[str, bool],
    action: str,
    name: str | None = None,
    value: str | None = None,
    timeout_s: float = 2.0,
    out: TextIO,
    err: TextIO,
) -> int:
    """``c2s-api flags list|set NAME on|off|unset NAME``.

    Args:
        redis_url: The service's Redis.
        prefix: Its key prefix (``REDIS_KEY_PREFIX``).
        defaults: This deployment's defaults (:func:`defaults_from_settings`).
        action: ``list``, ``set`` or ``unset``.
        name: The flag (``set``/``unset``).
        value: ``on`` or ``off`` (``set``).
        timeout_s: Bound of each Redis call.
        out: Where results go.
        err: Where errors go.

    Returns:
        0 on success, 1 when Redis cannot be reached, 2 for an unknown flag.
    """

    async def run() -> int:
        client = connect(redis_url, timeout_s=timeout_s, max_connections=4)
        try:
            return await _flags_command(
                client,
                prefix=prefix,
                defaults=defaults,
                action=action,
                name=name,
                value=value,
                out=out,
                err=err,
            )
        finally:
            await client.aclose()

    return asyncio.run(run())
