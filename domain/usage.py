"""Usage of the paid upstreams and the daily paid-call quota of each API key (no I/O).

A **paid call** is a call that reaches a paid upstream: a Work API call that was not served from
a cache, or a Diretrix CPF resolution (a contact not in the contact cache). The ports that make
those calls are wrapped once, at the composition root, by :class:`MeteredWorkApi` and
:class:`MeteredDiretrix`, so every use case (the pipeline, the customer lookups, the Work API
proxy, a worker's job) is metered without knowing it, and a cached or stored answer is free
by construction (it never reaches the wrapped port).

Who pays is :data:`domain.tenancy.current_caller` (set by the auth middleware, or by the worker
for work done for a key); work for nobody (a webhook job) is accounted to :data:`SYSTEM_TENANT`.

Before a paid call of a key with a quota (``core.api_keys.paid_quota_daily``) one unit of the
key's count for the UTC day is reserved (:meth:`domain.ports.UsageMeter.reserve`); a key at
its quota gets :class:`~domain.errors.QuotaExceeded` (HTTP 429, ``Retry-After`` = seconds to
the end of the UTC day) and the upstream is not called. A call that fails without an answer
(outage, breaker open, 5xx) gives its unit back; a call answered (data, or the Work API's "not
found") is paid and counted (:meth:`domain.ports.UsageMeter.record`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import msgspec

from domain.errors import InvalidInput, QuotaExceeded, UpstreamSoftError
from domain.tenancy import Caller, current_caller, current_tenant

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from domain.dossier import Dossier
    from domain.models import CpfCandidate
    from domain.ports import Clock, DiretrixPort, UsageLedger, UsageMeter, WorkApiPort

__all__ = [
    "MAX_PERIOD_DAYS",
    "MAX_QUOTA",
    "PAID_UPSTREAMS",
    "SYSTEM_TENANT",
    "MeteredDiretrix",
    "MeteredWorkApi",
    "PaidCalls",
    "PaidUpstream",
    "UsageCount",
    "UsageReport",
    "UsageReports",
    "UsageRow",
    "parse_paid_quota",
    "seconds_until_day_end",
    "usage_period",
    "utc_day",
]

PaidUpstream = Literal["work_api", "diretrix"]
PAID_UPSTREAMS: Final[tuple[PaidUpstream, ...]] = ("work_api", "diretrix")
# Not a valid tenant id (domain.keys.validate_tenant): the paid calls of work done for no key.
SYSTEM_TENANT: Final = "_system"
MAX_QUOTA: Final = 100_000_000
MAX_PERIOD_DAYS: Final = 366

_T = TypeVar("_T")


def utc_day(epoch_s: float) -> dt.date:
    """The UTC calendar day of an instant."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).date()


def seconds_until_day_end(epoch_s: float) -> float:
    """Seconds from ``epoch_s`` to the next 00:00 UTC (at least 1)."""
    now = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return max(1.0, (midnight - now).total_seconds())


def parse_paid_quota(raw: str | int | None) -> int | None:
    """A daily paid-call quota as an operator writes it: a count, or ``none`` for no quota.

    Raises:
        InvalidInput: Not ``none`` nor an integer in 0..:data:`MAX_QUOTA`.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in {"none", "unlimited", ""}:
            return None
        if not text.isdigit():
            raise InvalidInput("paid_quota", "paid quota must be a whole number or 'none'")
        raw = int(text)
    if not 0 <= raw <= MAX_QUOTA:
        raise InvalidInput("paid_quota", f"paid quota must be 0..{MAX_QUOTA} or 'none'")
    return raw


class UsageCount(msgspec.Struct, frozen=True):
    """Paid calls counted for one (day, tenant, key, upstream); the unit the meter writes."""

    day: dt.date
    tenant: str
    key_id: str
    upstream: str
    calls: int


class PaidCalls:
    """Meters paid calls and enforces each key's daily quota (see the module docstring).

    Args:
        meter: The counters (in-process accumulator, shared per-key day counters).
        clock: Wall-clock time (the UTC day, ``Retry-After``).
    """

    __slots__ = ("_clock", "_meter")

    def __init__(self, meter: UsageMeter, clock: Clock) -> None:
        self._meter = meter
        self._clock = clock

    async def run(self, upstream: PaidUpstream, call: Callable[[], Awaitable[_T]]) -> _T:
        """Make the paid call ``call`` for the current caller, within its quota.

        Raises:
            QuotaExceeded: The caller's key reached its quota today (``call`` not made).
        """
        caller = current_caller.get()
        if caller is None:
            caller = Caller(tenant=current_tenant.get() or SYSTEM_TENANT)
        now = self._clock.now()
        day = utc_day(now)
        key_id = caller.key_id or ""
        quota = caller.paid_quota if key_id else None
        if quota is not None and not await self._meter.reserve(caller.tenant, key_id, day, quota):
            self._meter.refused(caller.tenant, upstream)
            raise QuotaExceeded(upstream, retry_after=seconds_until_day_end(now))
        paid = False
        try:
            result = await call()
            paid = True
        except UpstreamSoftError as exc:
            # The Work API looked the document up and found nothing: answered, so paid.
            paid = exc.kind == "not_found"
            raise
        finally:
            if paid:
                self._meter.record(UsageCount(day, caller.tenant, key_id, upstream, 1))
            elif quota is not None:
                # Not answered (outage, breaker open, 5xx, cancelled): the unit is given back.
                await asyncio.shield(self._meter.release(key_id, day))
        return result


class MeteredWorkApi:
    """A :class:`~domain.ports.WorkApiPort` whose every call is a metered paid call."""

    __slots__ = ("_inner", "_paid")

    def __init__(self, inner: WorkApiPort, paid: PaidCalls) -> None:
        self._inner = inner
        self._paid = paid

    async def fetch_module(self, module: str, query: str) -> bytes:
        return await self._paid.run("work_api", lambda: self._inner.fetch_module(module, query))

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        return await self._paid.run("work_api", lambda: self._inner.fetch_dossier(cpf))


class MeteredDiretrix:
    """A :class:`~domain.ports.DiretrixPort` whose every search is a metered paid call."""

    __slots__ = ("_inner", "_paid")

    def __init__(self, inner: DiretrixPort, paid: PaidCalls) -> None:
        self._inner = inner
        self._paid = paid

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        return await self._paid.run("diretrix", lambda: self._inner.search_by_phone(national_phone))

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        return await self._paid.run("diretrix", lambda: self._inner.search_by_email(email))


# --- the report of GET /api/v1/usage ------------------------------------------------------------


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Paid calls of one key to one upstream on one UTC day."""

    day: dt.date
    key_id: str | None
    upstream: str
    calls: int


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's paid calls over a period of UTC days (both ends included).

    Attributes:
        tenant: The tenant (the key's own).
        from_: First day (``from`` on the wire).
        to: Last day.
        total: Every paid call of the period.
        by_upstream: Calls per upstream.
        by_key: Calls per API key id.
        by_day: Calls per day (ISO date), days without calls left out.
        rows: Per day, key and upstream, oldest first.
    """

    tenant: str
    from_: dt.date = msgspec.field(name="from")
    to: dt.date
    total: int
    by_upstream: dict[str, int]
    by_key: dict[str, int]
    by_day: dict[str, int]
    rows: list[UsageRow]


def _parse_day(field: str, raw: str | dt.date | None) -> dt.date | None:
    if raw is None or isinstance(raw, dt.date):
        return raw
    if not raw.strip():
        return None
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(field, f"'{field}' must be a date (YYYY-MM-DD)") from None


def usage_period(
    raw_from: str | dt.date | None, raw_to: str | dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """The period of a usage report: default the current UTC month up to ``today``.

    Raises:
        InvalidInput: A malformed date, ``from`` after ``to``, or more than
            :data:`MAX_PERIOD_DAYS` days.
    """
    first = _parse_day("from", raw_from)
    last = _parse_day("to", raw_to)
    if last is None:
        last = today if first is None or first <= today else first
    if first is None:
        first = last.replace(day=1)
    if first > last:
        raise InvalidInput("from", "'from' must not be after 'to'")
    if (last - first).days + 1 > MAX_PERIOD_DAYS:
        raise InvalidInput("from", f"a usage report covers at most {MAX_PERIOD_DAYS} days")
    return first, last


class UsageReports:
    """The usage report use case (``GET /api/v1/usage``).

    Args:
        meter: Flushed first, so this process's latest calls are in the report.
        ledger: Where the counts are stored.
        clock: Today's date (the default period).
    """

    __slots__ = ("_clock", "_ledger", "_meter")

    def __init__(self, meter: UsageMeter, ledger: UsageLedger, clock: Clock) -> None:
        self._meter = meter
        self._ledger = ledger
        self._clock = clock

    async def report(
        self, tenant: str, raw_from: str | dt.date | None, raw_to: str | dt.date | None
    ) -> UsageReport:
        """The paid calls of ``tenant`` (only) over the asked period.

        Raises:
            InvalidInput: A bad period (:func:`usage_period`).
            DependencyUnavailable: The ledger cannot be read.
        """
        first, last = usage_period(raw_from, raw_to, utc_day(self._clock.now()))
        await self._meter.flush()
        counts = await self._ledger.usage(tenant, first, last)
        rows = sorted(
            (
                UsageRow(day=c.day, key_id=c.key_id or None, upstream=c.upstream, calls=c.calls)
                for c in counts
                if c.tenant == tenant
            ),
            key=lambda r: (r.day, r.key_id or "", r.upstream),
        )
        by_upstream: dict[str, int] = {}
        by_key: dict[str, int] = {}
        by_day: dict[str, int] = {}
        for row in rows:
            by_upstream[row.upstream] = by_upstream.get(row.upstream, 0) + row.calls
            key = row.key_id or ""
            by_key[key] = by_key.get(key, 0) + row.calls
            day = row.day.isoformat()
            by_day[day] = by_day.get(day, 0) + row.calls
        return UsageReport(
            tenant=tenant,
            from_=first,
            to=last,
            total=sum(by_upstream.values()),
            by_upstream=by_upstream,
            by_key=by_key,
            by_day=by_day,
            rows=rows,
        )
