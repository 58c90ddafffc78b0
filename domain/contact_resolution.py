"""Contact resolution: the CPF(s) of a lead's phone and e-mail, from the contact cache or Diretrix.

A phone and an e-mail are looked up concurrently; each candidate list is matched against the
lead's name (:func:`domain.names.best_candidate`); Diretrix's answers are cached together. A
failing lookup (Diretrix down, breaker open) counts as ``unavailable`` for that contact only.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

import msgspec

from domain.emails import is_valid_email, normalize_email
from domain.errors import DependencyUnavailable, InvalidInput, UpstreamError
from domain.names import best_candidate
from domain.phones import diretrix_form, parse_br_phone
from domain.resolution import ContactLookup, MatchInfo, Resolution, ResolvedPerson

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.models import CpfCandidate, LeadCustomer
    from domain.ports import ContactCpfCache, DiretrixPort

__all__ = ["ContactResolver"]

# Diretrix's answer to cache: (kind, value, candidates).
_Answer = tuple[Literal["phone", "email"], str, "Sequence[CpfCandidate]"]


class ContactResolver:
    """Resolves a lead's contacts to CPFs.

    Args:
        diretrix: The CPF-by-contact upstream.
        contact_cache: Diretrix's answers, cached.
        name_match_threshold: The lowest name-match score that accepts a candidate.
    """

    __slots__ = ("contact_cache", "diretrix", "name_match_threshold")

    def __init__(
        self,
        diretrix: DiretrixPort,
        contact_cache: ContactCpfCache,
        *,
        name_match_threshold: float,
    ) -> None:
        self.diretrix = diretrix
        self.contact_cache = contact_cache
        self.name_match_threshold = name_match_threshold

    async def resolve(self, customer: LeadCustomer) -> Resolution:
        """Resolve the customer's CPF(s) from phone and e-mail, concurrently.

        A failing lookup (Diretrix down, breaker open) counts as ``unavailable`` for that contact
        only; the other contact still resolves.
        """
        (phone, phone_answer), (email, email_answer) = await asyncio.gather(
            self._lookup_phone(customer), self._lookup_email(customer)
        )
        # Diretrix's answers are cached together: one round trip for both.
        answers = (a for a in (phone_answer, email_answer) if a is not None)
        await asyncio.gather(*(self.contact_cache.put(*answer) for answer in answers))
        people: list[ResolvedPerson] = []
        if phone.person is not None and email.person is not None:
            if phone.person.cpf == email.person.cpf:
                people.append(msgspec.structs.replace(phone.person, via="both", contact=None))
            else:
                people.extend([phone.person, email.person])
        elif phone.person is not None:
            people.append(phone.person)
        elif email.person is not None:
            people.append(email.person)
        return Resolution(people=people, phone=phone, email=email)

    async def _lookup_phone(self, customer: LeadCustomer) -> tuple[ContactLookup, _Answer | None]:
        raw = customer.phone or customer.phone2
        if not raw or not raw.strip():
            return ContactLookup(status="absent"), None
        try:
            phone = parse_br_phone(raw)
        except InvalidInput:
            return ContactLookup(status="invalid"), None
        national = diretrix_form(phone)
        return await self._lookup("phone", national, customer.name, national)

    async def _lookup_email(self, customer: LeadCustomer) -> tuple[ContactLookup, _Answer | None]:
        raw = customer.email
        if not raw or not raw.strip():
            return ContactLookup(status="absent"), None
        if not is_valid_email(raw):
            return ContactLookup(status="invalid"), None
        email = normalize_email(raw)
        return await self._lookup("email", email, customer.name, email)

    async def _lookup(
        self, kind: Literal["phone", "email"], value: str, lead_name: str | None, shown: str
    ) -> tuple[ContactLookup, _Answer | None]:
        """The contact's lookup, and Diretrix's answer to cache (None: cached, or an error)."""
        source = "cache"
        answer: _Answer | None = None
        candidates = await self.contact_cache.get(kind, value)
        if candidates is None:
            source = "diretrix"
            try:
                if kind == "phone":
                    candidates = await self.diretrix.search_by_phone(value)
                else:
                    candidates = await self.diretrix.search_by_email(value)
            except DependencyUnavailable as exc:
                # Never cached, never "not found": the caller answers an outage.
                return ContactLookup(status="unavailable", retry_after=exc.retry_after), None
            except UpstreamError:
                return ContactLookup(status="unavailable"), None
            answer = (kind, value, candidates)
        chosen = best_candidate(candidates, lead_name, self.name_match_threshold)
        if chosen is None:
            return ContactLookup(status="not_found"), answer
        cpf, score, method, matched = chosen
        return ContactLookup(
            status="found",
            person=ResolvedPerson(
                cpf=cpf,
                via=kind,
                contact=shown,
                match=MatchInfo(score=score, method=method, source=source, matched=matched),
            ),
        ), answer
