"""Event-driven waits: poll a condition until it holds, bounded, instead of sleeping blindly.

A wait that runs out fails the test with what it was waiting for; nothing here asserts on how
long something took.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["seconds_until", "wait_until", "wait_until_sync"]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 15.0
DEFAULT_INTERVAL_S = 0.05


async def _holds(predicate: Callable[[], object]) -> object:
    result = predicate()
    if inspect.isawaitable(result):
        return await result
    return result


async def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    what: str = "the condition",
    interval_s: float = DEFAULT_INTERVAL_S,
) -> object:
    """Return the first truthy value of ``predicate()`` (sync, or async: awaited), polled every
    ``interval_s``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (result := await _holds(predicate)):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
    return result


def wait_until_sync(
    predicate: Callable[[], T],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    what: str = "the condition",
    interval_s: float = DEFAULT_INTERVAL_S,
) -> T:
    """:func:`wait_until` for code without an event loop (threads, child processes)."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
    return result


async def seconds_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.1
) -> float | None:
    """Seconds until ``check()`` held, or None after ``timeout_s``: a measurement (the chaos
    scenarios report recovery times), never a pass/fail bound on its own."""
    started = time.monotonic()
    while time.monotonic() - started <= timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(interval_s)
    return None
