"""One C2S message per lead and enrichment (``docs/contract.md`` §2, "One message per lead").

A lead's message depends on its contacts: phone and e-mail decide the CPFs, the CPFs the
dossiers. So a lead that was messaged for a given contact has had its message, whatever events
C2S fires afterwards (``on_update_lead`` for a status change, or because our own message updated
the lead). The record per (tenant, lead id) holds a fingerprint of the contacts last messaged and
the CPFs of that message; the adapter stores a keyed digest of the fingerprint, never the
contacts themselves. An event whose fingerprint equals the recorded one completes without a
message; a genuinely changed contact (a new phone or e-mail) enriches and messages again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from domain.emails import is_valid_email, normalize_email
from domain.errors import InvalidInput
from domain.phones import diretrix_form, parse_br_phone

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.models import LeadCustomer

__all__ = ["ALREADY_MESSAGED", "UnrecordedLeadMessages", "contact_fingerprint"]

ALREADY_MESSAGED: Final = "no message: the lead was already messaged for these contacts"


def _phone(raw: str | None) -> str:
    if not raw or not raw.strip():
        return ""
    try:
        return diretrix_form(parse_br_phone(raw))
    except InvalidInput:
        return ""


def _email(raw: str | None) -> str:
    if not raw or not raw.strip() or not is_valid_email(raw):
        return ""
    return normalize_email(raw)


def contact_fingerprint(customer: LeadCustomer) -> str:
    """The contacts that decide a lead's enrichment, normalised as the pipeline uses them.

    The phone (national digits; the first of ``phone``/``phone2`` present, as the lookup takes
    it) and the e-mail (trimmed, lower-cased); an invalid or absent contact counts as empty, so
    a different spelling of the same phone is the same fingerprint. Personal data: the adapter
    stores only a keyed digest of it.
    """
    return f"phone:{_phone(customer.phone or customer.phone2)}\nemail:{_email(customer.email)}"


class UnrecordedLeadMessages:
    """No record at all (an enricher built without one): every lead counts as never messaged."""

    async def messaged(self, lead_id: str, contact: str) -> bool:
        return False

    async def claim(self, lead_id: str, contact: str, cpfs: Sequence[str]) -> bool:
        return True

    async def release(self, lead_id: str, contact: str) -> None:
        return None
