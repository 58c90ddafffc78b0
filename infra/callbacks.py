"""The callback delivery loop: post due deliveries, signed, and record each attempt.

:class:`CallbackDispatcher` runs beside the event consumer in ``c2s-api worker``. Each pass claims
up to ``concurrency`` due rows (``infra/db/callbacks.py``), posts each one once and records the
outcome with the schedule of ``domain/callbacks.py``: a 2xx is ``delivered``; any other answer,
a redirect (never followed), a timeout, a connection error or a refused address is retried with
backoff for 24 h after the first attempt, then ``failed``. A URL that breaks the URL rule (e.g.
``http`` in production) is ``failed`` at once: no retry can fix it.

SSRF (production): an address literal host must pass :func:`domain.callbacks.is_public_address`;
a host name is resolved by :class:`PublicOnlyResolver`, which refuses the connection unless EVERY
address it resolves to passes, and hands exactly those checked addresses to the connector: the
connection goes to an address that was checked, never to a second (rebound) resolution. No
proxy from the environment is used, no redirect followed.

Stopping: :meth:`CallbackDispatcher.run` ends its loop when ``stop`` is set; attempts in flight
finish (each bounded by ``CALLBACK_TIMEOUT_S``) unless the task is cancelled, in which case each
is given back (due again at once). A worker killed outright leaves its claims leased until
``timeout + LEASE_MARGIN_S``, after which any worker retries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from domain.callbacks import (
    RETRY_WINDOW_S,
    SIGNATURE_HEADER,
    callback_retry_policy,
    is_public_address,
    next_step,
    signature_header,
    validate_callback_url,
)
from domain.errors import DependencyUnavailable, InvalidInput
from observability import metrics

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from aiohttp.abc import ResolveResult

    from domain.callbacks import Step
    from infra.db.callback_secrets import PgCallbackSecrets
    from infra.db.callbacks import ClaimedDelivery, PgCallbackDeliveries

__all__ = [
    "LEASE_MARGIN_S",
    "CallbackDispatcher",
    "CallbackListener",
    "NonPublicAddress",
    "PrometheusCallbackListener",
    "PublicOnlyResolver",
]

log = structlog.get_logger(__name__)

LEASE_MARGIN_S: Final = 30.0
_PENDING_SAMPLE_S: Final = 15.0
_MAX_ANSWER_BYTES: Final = 64 * 1024
_USER_AGENT: Final = "c2s-api-callbacks/1"


class NonPublicAddress(OSError):
    """The callback host is, or resolves to, an address the SSRF rule refuses."""


class PublicOnlyResolver(AbstractResolver):
    """A resolver that answers only when every resolved address is public (production).

    Args:
        inner: The resolver asked (default: aiohttp's default resolver).
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        if not infos or not all(is_public_address(info["host"]) for info in infos):
            raise NonPublicAddress("the callback host resolves to a non-public address")
        return infos

    async def close(self) -> None:
        await self._inner.close()


class CallbackListener(Protocol):
    """Metrics hooks of the loop."""

    def attempted(self, outcome: str) -> None:
        """One attempt ended: ``delivered``, ``retried`` or ``failed``."""

    def sampled(self, pending: int) -> None:
        """Deliveries pending now."""


class PrometheusCallbackListener:
    """Feeds ``callback_deliveries_total{outcome}`` and ``callback_pending``."""

    def attempted(self, outcome: str) -> None:
        metrics.CALLBACK_DELIVERIES.labels(outcome).inc()

    def sampled(self, pending: int) -> None:
        metrics.CALLBACK_PENDING.set(pending)


class _NullListener:
    def attempted(self, outcome: str) -> None:
        return None

    def sampled(self, pending: int) -> None:
        return None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _caused_by_refusal(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, NonPublicAddress) or isinstance(
            getattr(seen, "os_error", None), NonPublicAddress
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Attempt:
    """The outcome of one POST: the status, or why there was none."""

    __slots__ = ("error", "status")

    def __init__(self, status: int | None, error: str | None) -> None:
        self.status = status
        self.error = error

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class CallbackDispatcher:
    """Posts due callback deliveries; an async context manager owning its HTTP session.

    Args:
        deliveries: The deliveries store.
        secrets: The keys' callback secrets.
        environment: ``Settings.environment``; ``production`` applies the SSRF rule.
        timeout_s: Bound of one attempt (``CALLBACK_TIMEOUT_S``).
        retry_base_s: First cap of the backoff (``CALLBACK_RETRY_BASE_S``).
        concurrency: Attempts at once (``CALLBACK_CONCURRENCY``).
        poll_s: Pause between passes when nothing was due (``CALLBACK_POLL_S``).
        clock: Wall-clock seconds (injectable: tests run the 24 h schedule virtually).
        rand: Jitter source in [0, 1).
        resolver: The DNS resolver behind the SSRF check (tests give a fixed one).
        listener: Metrics hooks.
    """

    def __init__(
        self,
        *,
        deliveries: PgCallbackDeliveries,
        secrets: PgCallbackSecrets,
        environment: str,
        timeout_s: float = 10.0,
        retry_base_s: float = 10.0,
        concurrency: int = 4,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        resolver: AbstractResolver | None = None,
        listener: CallbackListener | None = None,
    ) -> None:
        self._deliveries = deliveries
        self._secrets = secrets
        self._environment = environment
        self._guarded = environment == "production"
        self._timeout_s = timeout_s
        self._policy = callback_retry_policy(retry_base_s)
        self._concurrency = concurrency
        self._poll_s = poll_s
        self._clock = clock
        self._rand = rand
        self._resolver = resolver
        self._listener = listener or _NullListener()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CallbackDispatcher:
        if self._guarded:
            resolver: AbstractResolver = PublicOnlyResolver(self._resolver)
        else:
            resolver = self._resolver if self._resolver is not None else DefaultResolver()
        connector = aiohttp.TCPConnector(
            limit=self._concurrency * 2,
            resolver=resolver,
            # Every connection resolves (and, in production, checks) afresh.
            use_dns_cache=False,
            force_close=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # no proxy from the environment: it would bypass the address check
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set (the current pass finishes first).

        PostgreSQL outages are logged and waited out; nothing here ends the loop but ``stop``
        or a cancellation. Opens (and closes) the HTTP session unless the dispatcher is open.
        """
        if self._session is None:
            async with self:
                await self._loop(stop)
            return
        await self._loop(stop)

    async def _loop(self, stop: asyncio.Event) -> None:
        sampled_at = float("-inf")
        while not stop.is_set():
            handled = 0
            try:
                if time.monotonic() - sampled_at >= _PENDING_SAMPLE_S:
                    self._listener.sampled(await self._deliveries.pending())
                    sampled_at = time.monotonic()
                handled = await self.deliver_due()
            except DependencyUnavailable as exc:
                log.warning("callbacks_postgres_unavailable", error=exc.detail)
            except Exception as exc:  # the loop outlives any one bad pass
                log.error("callbacks_pass_failed", error_type=type(exc).__name__)
            if handled < self._concurrency:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._poll_s)

    async def deliver_due(self) -> int:
        """One pass: claim up to ``concurrency`` due deliveries and attempt each once.

        Returns:
            How many were attempted.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        now = self._clock()
        claimed = await self._deliveries.claim_due(
            now=_utc(now),
            lease_until=_utc(now + self._timeout_s + LEASE_MARGIN_S),
            limit=self._concurrency,
        )
        if claimed:
            await asyncio.gather(*(self._deliver(item) for item in claimed))
        return len(claimed)

    async def _deliver(self, item: ClaimedDelivery) -> None:
        try:
            await self._attempt_and_record(item)
        except asyncio.CancelledError:
            # Stopped mid-attempt: due again at once (the receiver may have got it: receivers
            # deduplicate on C2S-Delivery-Id).
            release = self._deliveries.release(
                item, now=_utc(self._clock()), reason="interrupted: the worker stopped"
            )
            await asyncio.shield(release)
            raise
        except DependencyUnavailable as exc:
            # The outcome could not be recorded: the lease ends and the delivery is retried.
            log.warning("callback_not_recorded", delivery_id=str(item.id), error=exc.detail)

    async def _attempt_and_record(self, item: ClaimedDelivery) -> None:
        started = item.first_attempt_at.timestamp()
        if item.attempts > 1 and self._clock() - started > RETRY_WINDOW_S:
            await self._record(item, _Attempt(None, "retry window over"), final=True)
            return
        try:
            validate_callback_url(item.url, environment=self._environment)
        except InvalidInput as exc:
            await self._record(item, _Attempt(None, f"invalid callback URL: {exc.detail}"), True)
            return
        secrets = await self._secrets.signing_secrets(item.key_id)
        if not secrets:
            attempt = _Attempt(None, "no valid callback secret for the job's API key")
        else:
            attempt = await self._post(item, secrets)
        await self._record(item, attempt, final=False)

    async def _post(self, item: ClaimedDelivery, secrets: list[str]) -> _Attempt:
        session = self._session
        if session is None:
            raise RuntimeError("CallbackDispatcher used outside 'async with'")
        host = (urlsplit(item.url).hostname or "").split("%", 1)[0]
        if self._guarded and _is_refused_literal(host):
            return _Attempt(None, "refused: the callback host is a non-public address")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            SIGNATURE_HEADER: signature_header(secrets, timestamp, item.body),
            "C2S-Delivery-Id": str(item.id),
            "C2S-Delivery-Attempt": str(item.attempts),
            "C2S-Event": "enrich_job.finished",
        }
        try:
            async with session.post(
                item.url, data=item.body, headers=headers, allow_redirects=False
            ) as answer:
                await answer.content.read(_MAX_ANSWER_BYTES)
                status = answer.status
        except TimeoutError:
            return _Attempt(None, f"timeout after {self._timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            if _caused_by_refusal(exc):
                return _Attempt(None, "refused: the callback host resolves to a non-public address")
            return _Attempt(None, f"connection error ({type(exc).__name__})")
        if 200 <= status < 300:
            return _Attempt(status, None)
        return _Attempt(status, f"HTTP {status}")

    async def _record(self, item: ClaimedDelivery, attempt: _Attempt, final: bool) -> None:
        now = self._clock()
        if final:
            step: Step = next_step(
                delivered=False,
                attempts=item.attempts,
                since_first_attempt_s=float("inf"),
                rand=0.0,
                policy=self._policy,
            )
        else:
            step = next_step(
                delivered=attempt.delivered,
                attempts=item.attempts,
                since_first_attempt_s=now - item.first_attempt_at.timestamp(),
                rand=self._rand(),
                policy=self._policy,
            )
        recorded = await self._deliveries.finish(
            item,
            state=step.state,
            next_attempt_at=_utc(now + step.delay_s),
            last_status=attempt.status,
            last_error=attempt.error,
            now=_utc(now),
        )
        if not recorded:
            log.warning("callback_claim_lost", delivery_id=str(item.id))
            return
        outcome = "retried" if step.state == "pending" else step.state
        self._listener.attempted(outcome)
        log.info(
            "callback_attempt",
            delivery_id=str(item.id),
            job_id=str(item.job_id),
            attempt=item.attempts,
            outcome=outcome,
            status=attempt.status,
            error=attempt.error,
            retry_in_s=round(step.delay_s, 3) if step.state == "pending" else None,
        )


def _is_refused_literal(host: str) -> bool:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not is_public_address(literal)
