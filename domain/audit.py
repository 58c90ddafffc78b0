"""The audit trail's vocabulary: who read or bought whose data, and when (LGPD art. 37).

A record names its subject by a keyed digest of the CPF (:class:`SubjectDigester`), never the CPF
itself: the trail proves what was done with a person's data without becoming one more copy of it.
Records are appended by the :class:`domain.ports.AuditTrail` port, off the request's critical
path (batched, flushed on drain), and never updated or deleted by the application.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, Literal, get_args

import msgspec

from domain.cursors import decode_position, encode_position
from domain.documents import normalize_cpf
from domain.errors import InvalidInput
from domain.tenancy import current_caller, current_tenant

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from domain.ports import AuditReader, AuditTrail, Clock
    from domain.resolution import Resolution

__all__ = [
    "AUDIT_PAGE_DEFAULT",
    "AUDIT_PAGE_MAX",
    "OPERATIONS",
    "AccessRecord",
    "AuditCursor",
    "AuditLog",
    "AuditPage",
    "AuditQuery",
    "Auditor",
    "Operation",
    "SubjectDigester",
    "decode_cursor",
    "encode_cursor",
    "note_paid_call",
    "paid_scope",
]

Operation = Literal[
    "lookup",  # /contributor/customer, /enrich (one identifier set)
    "batch",  # an item of /enrich/batch
    "bulk",  # an item of a bulk enrichment job
    "lead",  # /leads/process, /c2s/enrich and friends
    "webhook",  # a lead processed by the webhook job
    "work_module",  # /work/modules/*
    "customer",  # /customers/{id}
    "search",  # a stored party returned by a name search
    "subject_export",  # GET /subjects/{cpf}
    "subject_erasure",  # DELETE /subjects/{cpf}
    "retention",  # purged by the retention job
]
OPERATIONS: Final[tuple[Operation, ...]] = get_args(Operation)


class AccessRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One read or fetch of one person's data.

    Attributes:
        at: When (UTC).
        tenant: The tenant of the key that asked (``""`` for an operator or the system).
        key_id: The API key's id, or ``None``.
        operation: What was done (:data:`Operation`).
        subject: The keyed digest of the person's CPF (:class:`SubjectDigester`).
        paid: Whether a paid upstream call was made for it.
        upstream: The paid upstream called (``"work_api"``, ``"diretrix"``), or ``None``.
        request_id: The request's id, or ``None`` (worker, CLI).
    """

    at: dt.datetime
    tenant: str
    key_id: str | None
    operation: Operation
    subject: str
    paid: bool = False
    upstream: str | None = None
    request_id: str | None = None


class SubjectDigester:
    """The keyed digest naming a person in the audit trail and in erasure tombstones.

    BLAKE2b keyed with the deployment's ``CACHE_KEY_SALT`` (its own personalisation, so it never
    equals a Redis key digest of the same CPF): stable across processes, not reversible without
    the key, and the same for every way a CPF is written (the caller normalises it first).
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the subject digest needs a key")
        self._key = key[:64]

    def digest(self, cpf: str) -> str:
        """The hex digest of a normalised (11-digit) CPF."""
        return hashlib.blake2b(
            cpf.encode(), key=self._key, digest_size=16, person=b"subject"
        ).hexdigest()


# --- paid calls of the current operation -------------------------------------------------------

_paid_calls: ContextVar[dict[str, set[str]] | None] = ContextVar("audit_paid_calls", default=None)
"""CPF -> the paid upstreams called for it by the operation in progress (``None``: no operation
is being audited). A mutable mapping shared by the tasks the operation fans out (``gather``
copies the context, not the mapping)."""


@contextmanager
def paid_scope() -> Iterator[None]:
    """Start an operation: the paid calls noted in the block (:func:`note_paid_call`) are the
    ones :meth:`Auditor.record` reports for it."""
    token = _paid_calls.set({})
    try:
        yield
    finally:
        _paid_calls.reset(token)


def note_paid_call(cpf: str, upstream: str) -> None:
    """Note that a paid upstream (``"work_api"``) was called for ``cpf`` (no-op outside a
    :func:`paid_scope`)."""
    ledger = _paid_calls.get()
    if ledger is not None:
        ledger.setdefault(cpf, set()).add(upstream)


def _noted_calls(cpf: str) -> set[str]:
    ledger = _paid_calls.get()
    return ledger.get(cpf, set()) if ledger is not None else set()


class Auditor:
    """Appends the audit records of the use cases: one per person whose data an operation read.

    In memory only (the trail's ``record`` never awaits), so it may run on the hot path. Who
    asked comes from :data:`domain.tenancy.current_caller` (else the current tenant: a worker
    job), when from ``clock``; the subject is the keyed digest of the CPF.

    Args:
        trail: Where records go; ``None`` records nothing (tests and tools without a trail).
        digester: The subject digest (required with a trail).
        clock: Wall-clock seconds.
    """

    __slots__ = ("_clock", "_digester", "_trail")

    def __init__(
        self, trail: AuditTrail | None, digester: SubjectDigester | None, clock: Clock
    ) -> None:
        if trail is not None and digester is None:
            raise ValueError("an audit trail needs a subject digester")
        self._trail = trail
        self._digester = digester
        self._clock = clock

    @classmethod
    def disabled(cls) -> Auditor:
        """An auditor that records nothing (a use case built without a trail)."""
        return cls(None, None, _EpochClock())

    def record(self, operation: Operation, cpf: str, *, upstreams: Iterable[str] = ()) -> None:
        """Append the record of ``operation`` on the person of ``cpf`` (normalised, 11 digits).

        Args:
            operation: What was done.
            cpf: The person's CPF; never stored, only its digest.
            upstreams: Paid upstreams called for it, besides those noted in the current
                :func:`paid_scope` (``note_paid_call``).
        """
        trail, digester = self._trail, self._digester
        if trail is None or digester is None:
            return
        called = sorted(_noted_calls(cpf).union(upstreams))
        caller = current_caller.get()
        trail.record(
            AccessRecord(
                at=dt.datetime.fromtimestamp(self._clock.now(), dt.UTC),
                tenant=caller.tenant if caller is not None else (current_tenant.get() or ""),
                key_id=caller.key_id if caller is not None else None,
                operation=operation,
                subject=digester.digest(cpf),
                paid=bool(called),
                upstream=",".join(called) or None,
                request_id=caller.request_id if caller is not None else None,
            )
        )

    def people(self, operation: Operation, resolution: Resolution, cpfs: Iterable[str]) -> None:
        """Record ``operation`` for each of ``cpfs`` (the people whose dossier was used); a CPF
        Diretrix resolved (not the contact cache) counts the Diretrix call as paid."""
        resolved = [
            lookup.person
            for lookup in (resolution.phone, resolution.email)
            if lookup.person is not None
        ]
        for cpf in cpfs:
            from_diretrix = any(
                p.cpf == cpf and p.match is not None and p.match.source == "diretrix"
                for p in resolved
            )
            self.record(operation, cpf, upstreams=("diretrix",) if from_diretrix else ())


class _EpochClock:
    def now(self) -> float:
        return 0.0


# --- reading the trail -------------------------------------------------------------------------

AUDIT_PAGE_DEFAULT: Final = 100
AUDIT_PAGE_MAX: Final = 1000


class AuditCursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a page of records ended: the last record's time and id (keyset paging)."""

    at: dt.datetime
    id: int


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A search of one tenant's records, newest first.

    Attributes:
        tenant: The tenant whose records are read (always the caller's own).
        subject: Only this subject's records (a digest), or ``None``.
        key_id: Only this key's records, or ``None``.
        since: Records at or after this time, or ``None``.
        until: Records before this time, or ``None``.
        after: Continue after this record (the previous page's last), or ``None``.
        limit: At most this many records.
    """

    tenant: str
    subject: str | None = None
    key_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    after: AuditCursor | None = None
    limit: int = AUDIT_PAGE_DEFAULT


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of records and where the next one starts (``None``: this was the last)."""

    records: list[AccessRecord]
    next: AuditCursor | None = None


_NOT_A_CURSOR: Final = "not a cursor returned by this endpoint"


def encode_cursor(cursor: AuditCursor) -> str:
    """The opaque text form of a cursor (URL-safe)."""
    return encode_position(cursor)


def decode_cursor(text: str) -> AuditCursor:
    """Read a cursor made by :func:`encode_cursor`.

    Raises:
        InvalidInput: Not such a cursor.
    """
    cursor = decode_position(text, AuditCursor, detail=_NOT_A_CURSOR)
    if cursor.at.tzinfo is None:
        raise InvalidInput("cursor", _NOT_A_CURSOR)
    return cursor


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """A time without an offset is read as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


class AuditLog:
    """Reading one tenant's audit trail (``GET /api/v1/admin/audit``).

    Args:
        reader: The stored trail.
        digester: The subject digest: a CPF asked about is digested, never stored or echoed.
    """

    __slots__ = ("_digester", "_reader")

    def __init__(self, reader: AuditReader, digester: SubjectDigester) -> None:
        self._reader = reader
        self._digester = digester

    async def search(
        self,
        tenant: str,
        *,
        subject_cpf: str | None = None,
        key_id: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int = AUDIT_PAGE_DEFAULT,
    ) -> AuditPage:
        """One page of ``tenant``'s records, newest first.

        Raises:
            InvalidInput: An invalid CPF, a cursor not made here, or a limit out of 1..1000.
        """
        if not 1 <= limit <= AUDIT_PAGE_MAX:
            raise InvalidInput("limit", f"limit must be between 1 and {AUDIT_PAGE_MAX}")
        since, until = _utc(since), _utc(until)  # from after to: an empty range, no records
        subject = None
        if subject_cpf is not None and subject_cpf.strip():
            try:
                cpf = normalize_cpf(subject_cpf)
            except InvalidInput as exc:  # named after the parameter; the value is never echoed
                raise InvalidInput("subject_cpf", exc.detail) from None
            subject = self._digester.digest(cpf)
        return await self._reader.search(
            AuditQuery(
                tenant=tenant,
                subject=subject,
                key_id=key_id or None,
                since=since,
                until=until,
                after=decode_cursor(cursor) if cursor else None,
                limit=limit,
            )
        )
