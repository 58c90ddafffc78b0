"""Ports: what the use cases need from the outside world, as ``typing.Protocol``s.

Adapters in ``infra/`` implement these; ``tests/fakes.py`` holds in-memory fakes for unit tests.
Every method may raise :class:`domain.errors.DependencyUnavailable` (breaker open, timeout,
connection refused) or :class:`domain.errors.UpstreamError` (the upstream answered badly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from uuid import UUID

    from domain.dossier import Dossier
    from domain.models import (
        CpfCandidate,
        Lead,
        NewLead,
        PartyWithContacts,
        StoredDossier,
    )

__all__ = [
    "C2SPort",
    "DiretrixPort",
    "PartyRepository",
    "WorkApiPort",
]


class C2SPort(Protocol):
    """The Contact2Sale CRM."""

    async def fetch_lead(self, lead_id: str) -> Lead:
        """Return the lead; ``NotFound`` when C2S answers 404."""
        ...

    async def send_message(self, lead_id: str, body: str) -> None:
        """Post a message to the lead. Never retried blindly (not idempotent)."""
        ...

    async def create_lead(self, lead: NewLead) -> str:
        """Create a lead and return its id. Never retried blindly."""
        ...


class DiretrixPort(Protocol):
    """Diretrix: contact -> CPF candidates."""

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        """Candidates for a phone in national digits (DDD + number); ``[]`` when unknown."""
        ...

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        """Candidates for an e-mail; ``[]`` when unknown."""
        ...


class WorkApiPort(Protocol):
    """The Work API data broker."""

    async def fetch_module(self, module: str, query: str) -> bytes:
        """Return the raw JSON body of ``modulo=module&consulta=query``.

        Raises:
            UpstreamSoftError: the body carries an error inside HTTP 200 (never returned as data).
        """
        ...

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        """Return the decoded ``modulo=cpf`` dossier and its raw bytes."""
        ...


class PartyRepository(Protocol):
    """The party model in PostgreSQL."""

    async def find_by_cpf(self, cpf: str) -> PartyWithContacts | None:
        """The newest person party with this CPF (11 digits)."""
        ...

    async def find_by_email(self, email: str) -> PartyWithContacts | None:
        """The newest party owning this (lower-cased) e-mail."""
        ...

    async def find_by_phone(self, national_phone: str) -> PartyWithContacts | None:
        """The newest party owning this digits-only phone (type phone or whatsapp)."""
        ...

    async def search_by_name(self, name: str, limit: int = 10) -> list[PartyWithContacts]:
        """Parties whose name contains ``name`` (case-insensitive), best match first."""
        ...

    async def get_party(self, party_id: UUID) -> PartyWithContacts | None:
        """A party by id with its contacts."""
        ...

    async def store_dossier(
        self, cpf: str, dossier: Dossier, raw: bytes, lead_id: str | None
    ) -> StoredDossier:
        """Write party, person, contacts, addresses and enrichment in one transaction."""
        ...
