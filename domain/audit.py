"""The audit trail's vocabulary: who read or bought whose data, and when (LGPD art. 37).

A record names its subject by a keyed digest of the CPF (:class:`SubjectDigester`), never the CPF
itself: the trail proves what was done with a person's data without becoming one more copy of it.
Records are appended by the :class:`domain.ports.AuditTrail` port, off the request's critical
path (batched, flushed on drain), and never updated or deleted by the application.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Final, Literal, get_args

import msgspec

__all__ = [
    "OPERATIONS",
    "AccessRecord",
    "Operation",
    "SubjectDigester",
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


class AccessRecord(msgspec.Struct, frozen=True, kw_only=True):
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
