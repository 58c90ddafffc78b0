"""The Google Ads lead intake (``docs/contract.md`` §1.10): dedup on Google's lead id, contact
validation, best-effort enrichment, and the creation of the lead in C2S (never retried)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Annotated, Final

import msgspec

from domain.audit import paid_scope
from domain.emails import parse_email
from domain.errors import DomainError, InvalidInput
from domain.models import LeadCustomer, NewLead
from domain.phones import parse_br_phone
from domain.webhooks.retry import is_provably_unsent

if TYPE_CHECKING:
    from collections.abc import Callable

    from domain.pipeline import Enricher
    from domain.ports import GoogleLeadClaims

__all__ = [
    "CREATE_OUTCOME_UNKNOWN",
    "GoogleAdsColumn",
    "GoogleAdsIntake",
    "GoogleAdsLead",
    "GoogleAdsResult",
    "GoogleAdsSettings",
    "GoogleLeadClaim",
    "intake_google_lead",
    "truncate_text",
]

CREATE_OUTCOME_UNKNOWN: Final = "create outcome unknown: not retried to avoid a duplicate lead"
_GOOGLE_ID_MAX: Final = 256


class GoogleAdsColumn(msgspec.Struct, frozen=True, kw_only=True):
    """One answered field of a Google Ads lead form (``user_column_data`` item)."""

    column_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    column_name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    string_value: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class GoogleAdsLead(msgspec.Struct, frozen=True, kw_only=True):
    """The Google Ads lead-form webhook payload (extra keys are tolerated)."""

    lead_id: Annotated[str, msgspec.Meta(min_length=1, max_length=_GOOGLE_ID_MAX)]
    user_column_data: Annotated[list[GoogleAdsColumn], msgspec.Meta(max_length=200)] = (
        msgspec.field(default_factory=list)
    )
    api_version: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    form_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    campaign_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    adgroup_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    creative_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    gcl_id: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    is_test: bool = False


class GoogleAdsResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``POST /webhooks/google-ads`` (``docs/contract.md`` §1.10)."""

    success: bool
    message: str
    lead_id: str
    c2s_lead_id: str | None = None


class GoogleAdsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the Google Ads intake.

    Attributes:
        description_max_length: Characters of the C2S lead description
            (``C2S_DESCRIPTION_MAX_LENGTH``).
        default_seller_id: C2S seller the new lead is assigned to, if any.
        enrichment_timeout_s: Budget of the best-effort enrichment; the lead is created without
            it when exceeded (Google waits for the answer).
    """

    description_max_length: Annotated[int, msgspec.Meta(ge=1)] = 5000
    default_seller_id: str | None = None
    enrichment_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0


class GoogleLeadClaim(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of claiming a Google lead id.

    Attributes:
        acquired: This caller owns the lead now; ``False`` means it was seen before.
        c2s_lead_id: The C2S lead created for it earlier, when known.
    """

    acquired: bool
    c2s_lead_id: str | None = None


_NAME_COLUMNS: Final = ("FULL_NAME",)
_FIRST_NAME: Final = "FIRST_NAME"
_LAST_NAME: Final = "LAST_NAME"
_PHONE_COLUMNS: Final = ("PHONE_NUMBER", "WORK_PHONE")
_EMAIL_COLUMNS: Final = ("EMAIL", "WORK_EMAIL")
_DEFAULT_NAME: Final = "Lead Google Ads"
_ELLIPSIS: Final = "…"


def truncate_text(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, marking the cut with an ellipsis.

    Counts code points, not bytes, so the result is always valid UTF-8.
    """
    if len(text) <= max_chars:
        return text
    if max_chars <= len(_ELLIPSIS):
        return text[:max_chars]
    return text[: max_chars - len(_ELLIPSIS)].rstrip() + _ELLIPSIS


def _columns(lead: GoogleAdsLead) -> dict[str, str]:
    out: dict[str, str] = {}
    for column in lead.user_column_data:
        key = (column.column_id or column.column_name or "").strip().upper()
        value = (column.string_value or "").strip()
        if key and value and key not in out:
            out[key] = value
    return out


def _google_contacts(lead: GoogleAdsLead) -> tuple[str, str | None, str | None]:
    """The lead's name, validated E.164 phone and normalised e-mail (invalid ones dropped)."""
    columns = _columns(lead)
    name = next((columns[c] for c in _NAME_COLUMNS if c in columns), None)
    if name is None:
        parts = [columns.get(_FIRST_NAME, ""), columns.get(_LAST_NAME, "")]
        name = " ".join(p for p in parts if p) or _DEFAULT_NAME
    phone: str | None = None
    for column in _PHONE_COLUMNS:
        if column in columns:
            with contextlib.suppress(InvalidInput):
                phone = parse_br_phone(columns[column]).e164
                break
    email: str | None = None
    for column in _EMAIL_COLUMNS:
        if column in columns:
            with contextlib.suppress(InvalidInput):
                email = parse_email(columns[column])
                break
    return name, phone, email


def _google_description(lead: GoogleAdsLead, enrichment: str | None) -> str:
    lines = ["Lead do Google Ads"]
    for column in lead.user_column_data:
        label = (column.column_name or column.column_id or "").strip()
        value = (column.string_value or "").strip()
        if label and value:
            lines.append(f"{label}: {value}")
    origin = [
        f"{label}: {value}"
        for label, value in (
            ("Formulário", lead.form_id),
            ("Campanha", lead.campaign_id),
            ("Grupo de anúncios", lead.adgroup_id),
        )
        if value is not None and str(value)
    ]
    if origin:
        lines.append(" | ".join(origin))
    if lead.is_test:
        lines.append("(lead de teste do Google Ads)")
    text = "\n".join(lines)
    if enrichment:
        text = f"{text}\n\n{enrichment}"
    return text


async def _enrich_best_effort(
    enricher: Enricher, customer: LeadCustomer, timeout_s: float
) -> str | None:
    """Resolve, fetch and store the lead's person(s), and format the message; ``None`` on failure.

    The lead is worth creating without its enrichment, so any failure is swallowed here.
    """
    try:
        with paid_scope():
            return await _enrich(enricher, customer, timeout_s)
    except (DomainError, TimeoutError):
        return None


async def _enrich(enricher: Enricher, customer: LeadCustomer, timeout_s: float) -> str | None:
    async with asyncio.timeout(timeout_s):
        resolution = await enricher.resolve(customer)
        if not resolution.people:
            return None
        dossiers = await enricher.fetch_dossiers([p.cpf for p in resolution.people], use_cache=True)
        if not dossiers:
            return None
        enricher.audit.people("webhook", resolution, dossiers)
        await enricher.store(dossiers, None)
        return enricher.format(resolution, dossiers, "webhook")


async def intake_google_lead(
    lead: GoogleAdsLead,
    payload: bytes,
    *,
    claims: GoogleLeadClaims,
    enricher: Enricher,
    settings: GoogleAdsSettings,
    provably_unsent: Callable[[BaseException], bool] = is_provably_unsent,
) -> GoogleAdsResult:
    """Create a C2S lead from a Google Ads lead form, once per Google lead id.

    Args:
        lead: The decoded payload.
        payload: Its raw bytes (stored with the claim).
        claims: Dedup by Google lead id.
        enricher: The pipeline (its steps are used best-effort; its C2S port creates the lead).
        settings: Description length, seller, enrichment budget.
        provably_unsent: Tells whether a failed creation certainly created nothing (then the
            claim is released so Google's redelivery can try again).

    Returns:
        ``success`` with the C2S lead id, or the duplicate answer.

    Raises:
        InvalidInput: ``user_column_data`` has neither a valid phone nor a valid e-mail.
        UpstreamError: C2S refused or failed the creation.
        DependencyUnavailable: C2S (or the claim store) is unavailable.
    """
    name, phone, email = _google_contacts(lead)
    if phone is None and email is None:
        raise InvalidInput("user_column_data", "the lead has neither a valid phone nor e-mail")
    claim = await claims.claim(lead.lead_id, payload)
    if not claim.acquired:
        return GoogleAdsResult(
            success=True,
            message="Lead already processed (duplicate)",
            lead_id=lead.lead_id,
            c2s_lead_id=claim.c2s_lead_id,
        )
    try:
        customer = LeadCustomer(name=name, phone=phone, email=email)
        enrichment = await _enrich_best_effort(enricher, customer, settings.enrichment_timeout_s)
        description = truncate_text(
            _google_description(lead, enrichment), settings.description_max_length
        )
        new_lead = NewLead(
            name=name,
            description=description,
            phone=phone,
            email=email,
            seller_id=settings.default_seller_id or None,
        )
    except BaseException:
        await claims.release(lead.lead_id)
        raise
    try:
        c2s_lead_id = await enricher.c2s.create_lead(new_lead)
    except Exception as exc:
        if provably_unsent(exc):
            await claims.release(lead.lead_id)
        else:
            await claims.fail(lead.lead_id, CREATE_OUTCOME_UNKNOWN)
        raise
    await claims.complete(lead.lead_id, c2s_lead_id)
    return GoogleAdsResult(
        success=True,
        message="Lead created in C2S",
        lead_id=lead.lead_id,
        c2s_lead_id=c2s_lead_id,
    )


class GoogleAdsIntake:
    """The Google Ads lead-form intake with its collaborators bound once (the webhook route
    calls :meth:`accept`).

    Args:
        claims: Dedup by Google lead id.
        enricher: The pipeline (best-effort enrichment; its C2S port creates the lead).
        settings: Description length and default seller.
        provably_unsent: Tells whether a failed creation certainly created nothing.
    """

    __slots__ = ("_claims", "_enricher", "_provably_unsent", "_settings")

    def __init__(
        self,
        *,
        claims: GoogleLeadClaims,
        enricher: Enricher,
        settings: GoogleAdsSettings,
        provably_unsent: Callable[[BaseException], bool] = is_provably_unsent,
    ) -> None:
        self._claims = claims
        self._enricher = enricher
        self._settings = settings
        self._provably_unsent = provably_unsent

    async def accept(self, lead: GoogleAdsLead, payload: bytes) -> GoogleAdsResult:
        """:func:`intake_google_lead` with the bound collaborators."""
        return await intake_google_lead(
            lead,
            payload,
            claims=self._claims,
            enricher=self._enricher,
            settings=self._settings,
            provably_unsent=self._provably_unsent,
        )
