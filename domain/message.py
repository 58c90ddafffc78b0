"""The message posted to the C2S lead (``docs/contract.md`` §6.6), reproduced byte for byte.

One **block** per dossier (:func:`format_block`)::

    ✅ DADOS PESSOAIS
    Nome: ... / CPF: ... / Data Nascimento: ... / Sexo: ... / Mãe: ...      (each if present)

    💰 DADOS FINANCEIROS                                                      (if DadosEconomicos)
    Renda: R$ <renda x multiplier, 2 decimals> / Poder Aquisitivo / Faixa de Renda / Score / Risco

    📧 EMAILS       first 3: ``{n}. {email} ({prioridade or N/A})``
    📱 TELEFONES    first 3: ``{n}. {telefone} - {tipo or N/A} {✅ if whatsapp == "SIM"}``
    🏠 ENDEREÇOS    first 2: ``{n}. {logradouro} {numero}, {bairro} - {cidade}/{uf} - CEP: {cep}``
    🏢 EMPRESAS     first 3: ``{n}. CNPJ: {cnpj} - {relacao, SOCIO when absent}``

Every line ends with ``\\n``. Line breaks inside upstream values are replaced by spaces so that a
value can never forge a line of its own. Income and every ``R$ <integer>`` of the income band are
multiplied (default 1.9: reported income -> estimated real income) in binary floating point and
printed with 2 decimals as the earlier service printed them (``f"{float(renda) * m:.2f}"``: the
exact binary product rounded half-even, so ``1776,35`` -> ``3375.06``; ``docs/contract.md`` §6.6).

**Wrappers** (:func:`format_lead_message`). People are first merged by CPF: one CPF found through
both the phone and the e-mail is one person "via both".

* One person via both (either layout)::

      📞📧 Telefone e e-mail da mesma pessoa
      <blank line>
      <block>

* ``webhook`` layout (``/c2s/enrich`` and the C2S webhook), several people::

      ⚠️ Telefone e e-mail relacionados a PESSOAS DIFERENTES!
      <blank line>
      ═══ PESSOA 1 (Telefone: {phone}) ═══
      <block>
      <two blank lines>
      ═══ PESSOA 2 (Email: {email}) ═══
      <block>

* ``webhook`` layout, **single source** (never the "PESSOAS DIFERENTES" header with a lone
  PESSOA 1 section; ``docs/contract.md`` §7): one line naming the contact the person was found
  from, a blank line, then the block::

      📞 Dados encontrados pelo telefone: {phone}        (or, via e-mail:)
      📧 Dados encontrados pelo e-mail: {email}

  A person looked up directly by CPF (``via="direct"``) gets the bare block.
* ``process`` layout (``/leads/process``): the same-person header when it applies, otherwise the
  bare blocks joined by ``\\n---\\n\\n`` (no PESSOA labels, no single-source line).

An empty list of people gives an empty message; callers must not send it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

import msgspec

from domain.documents import normalize_cpf, only_digits
from domain.dossier import DadosEconomicos, Dossier, parse_amount
from domain.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_INCOME_MULTIPLIER",
    "DIFFERENT_PEOPLE_HEADER",
    "PROCESS_SEPARATOR",
    "SAME_PERSON_HEADER",
    "SINGLE_SOURCE_EMAIL_HEADER",
    "SINGLE_SOURCE_PHONE_HEADER",
    "Layout",
    "PersonSource",
    "Via",
    "format_block",
    "format_lead_message",
    "scale_amount",
]

DEFAULT_INCOME_MULTIPLIER = 1.9

SAME_PERSON_HEADER = "📞📧 Telefone e e-mail da mesma pessoa"
DIFFERENT_PEOPLE_HEADER = "⚠️ Telefone e e-mail relacionados a PESSOAS DIFERENTES!"
SINGLE_SOURCE_PHONE_HEADER = "📞 Dados encontrados pelo telefone"
SINGLE_SOURCE_EMAIL_HEADER = "📧 Dados encontrados pelo e-mail"
PROCESS_SEPARATOR = "\n---\n\n"

Via = Literal["phone", "email", "both", "direct"]
Layout = Literal["webhook", "process"]

_MAX_EMAILS = 3
_MAX_PHONES = 3
_MAX_ADDRESSES = 2
_MAX_COMPANIES = 3
# Products at or above this are not amounts worth printing (the raw text is printed instead).
_MAX_PRODUCT = 1e18
# "R$ 7018" but not the "7018" of "R$ 7018,50" or "R$ 7.018": only plain integers are amounts.
_BAND_AMOUNT = re.compile(r"R\$ ([0-9]+)(?![0-9]|[.,][0-9])")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class PersonSource(msgspec.Struct, frozen=True, kw_only=True):
    """One person to report on, with how the lead's contact led to them.

    Attributes:
        cpf: The person's CPF (used to merge the same person found twice).
        dossier: The person's Work API dossier.
        via: ``phone``, ``email``, ``both`` (one CPF behind both contacts) or ``direct``.
        contact: The phone or e-mail shown in labels, as it should be displayed.
    """

    cpf: str
    dossier: Dossier
    via: Via
    contact: str | None = None


def _inline(value: str | int | None, default: str = "") -> str:
    if value is None:
        return default
    return _LINE_BREAKS.sub(" ", str(value))


def scale_amount(amount: Decimal, multiplier: float) -> str | None:
    """Multiply an amount and format it with 2 decimals, dot separator, no thousands separator.

    The product is computed as the earlier service computed it, in binary floating point
    (``float(amount) * multiplier``), and formatted as ``f"{x:.2f}"`` does: the exact binary value
    rounded half-even to cents. So ``1776.35 x 1.9`` prints ``3375.06`` (the double is
    3375.0649999...), not the decimal ``3375.065`` rounded up (``docs/contract.md`` §6.6).

    Args:
        amount: The amount (exact, as parsed).
        multiplier: The factor (float, as configured).

    Returns:
        The formatted product (``8500.50 x 1.9`` -> ``16150.95``), or None when the product
        cannot be represented (non-finite or absurdly large).
    """
    try:
        product = float(amount) * multiplier
    except (OverflowError, ValueError):
        return None
    if not math.isfinite(product) or abs(product) >= _MAX_PRODUCT:
        return None
    text = f"{product:.2f}"
    # Negative zero (or a negative amount rounding to zero) would print as "-0.00".
    return "0.00" if text == "-0.00" else text


def _income_lines(economic: DadosEconomicos, multiplier: float) -> list[str]:
    lines = ["", "💰 DADOS FINANCEIROS"]
    if economic.renda is not None:
        amount = parse_amount(economic.renda)
        scaled = scale_amount(amount, multiplier) if amount is not None else None
        lines.append(f"Renda: R$ {scaled if scaled is not None else _inline(economic.renda)}")
    power = economic.poder_aquisitivo
    if power is not None and power.poder_aquisitivo_descricao is not None:
        lines.append(f"Poder Aquisitivo: {_inline(power.poder_aquisitivo_descricao)}")
    if power is not None and power.faixa_poder_aquisitivo is not None:

        def scale_match(match: re.Match[str]) -> str:
            scaled = scale_amount(Decimal(match.group(1)), multiplier)
            return match.group(0) if scaled is None else f"R$ {scaled}"

        band = _BAND_AMOUNT.sub(scale_match, _inline(power.faixa_poder_aquisitivo))
        lines.append(f"Faixa de Renda: {band}")
    score = economic.score
    if score is not None and score.score_csba is not None:
        lines.append(f"Score de Crédito: {_inline(score.score_csba)}")
    if score is not None and score.score_csba_faixa_risco is not None:
        lines.append(f"Risco: {_inline(score.score_csba_faixa_risco)}")
    return lines


def format_block(d: Dossier, income_multiplier: float = DEFAULT_INCOME_MULTIPLIER) -> str:
    """Format the message block for one dossier. Never raises.

    Args:
        d: The dossier.
        income_multiplier: Factor applied to ``renda`` and to the income band amounts.

    Returns:
        The block; every line ends with ``\\n``.
    """
    lines = ["✅ DADOS PESSOAIS"]
    basic = d.dados_basicos
    if basic is not None:
        for label, value in (
            ("Nome", basic.nome),
            ("CPF", basic.cpf),
            ("Data Nascimento", basic.data_nascimento),
            ("Sexo", basic.sexo),
            ("Mãe", basic.nome_mae),
        ):
            if value is not None:
                lines.append(f"{label}: {_inline(value)}")

    if d.dados_economicos is not None:
        lines.extend(_income_lines(d.dados_economicos, income_multiplier))

    if d.emails:
        lines.extend(("", "📧 EMAILS"))
        for n, email in enumerate(d.emails[:_MAX_EMAILS], start=1):
            lines.append(f"{n}. {_inline(email.email)} ({_inline(email.prioridade, 'N/A')})")

    if d.telefones:
        lines.extend(("", "📱 TELEFONES"))
        for n, phone in enumerate(d.telefones[:_MAX_PHONES], start=1):
            mark = "✅" if phone.whatsapp == "SIM" else ""
            # The space before the mark stays when there is no mark (the contract's byte form).
            lines.append(f"{n}. {_inline(phone.telefone)} - {_inline(phone.tipo, 'N/A')} {mark}")

    if d.enderecos:
        lines.extend(("", "🏠 ENDEREÇOS"))
        for n, a in enumerate(d.enderecos[:_MAX_ADDRESSES], start=1):
            lines.append(
                f"{n}. {_inline(a.logradouro)} {_inline(a.logradouro_numero)}, "
                f"{_inline(a.bairro)} - {_inline(a.cidade)}/{_inline(a.uf)} - "
                f"CEP: {_inline(a.cep)}"
            )

    if d.empresas:
        lines.extend(("", "🏢 EMPRESAS"))
        for n, company in enumerate(d.empresas[:_MAX_COMPANIES], start=1):
            relation = _inline(company.relacao, "SOCIO")
            lines.append(f"{n}. CNPJ: {_inline(company.cnpj)} - {relation}")

    return "".join(f"{line}\n" for line in lines)


@dataclass(slots=True)
class _Person:
    dossier: Dossier
    vias: set[Via]
    contacts: dict[Via, str]

    @property
    def via(self) -> Via:
        if "both" in self.vias or {"phone", "email"} <= self.vias:
            return "both"
        if "phone" in self.vias:
            return "phone"
        if "email" in self.vias:
            return "email"
        return "direct"


def _person_key(cpf: str, index: int) -> str:
    try:
        return normalize_cpf(cpf)
    except InvalidInput:
        digits = only_digits(cpf)
        # Without digits there is nothing to compare: never merge such entries.
        return digits if digits else f"#{index}"


def _merge_by_cpf(people: Sequence[PersonSource]) -> list[_Person]:
    merged: dict[str, _Person] = {}
    for index, source in enumerate(people):
        key = _person_key(source.cpf, index)
        person = merged.get(key)
        if person is None:
            person = _Person(dossier=source.dossier, vias=set(), contacts={})
            merged[key] = person
        person.vias.add(source.via)
        if source.contact is not None:
            person.contacts.setdefault(source.via, source.contact)
    return list(merged.values())


def _label(person: _Person) -> str:
    via = person.via
    contact = person.contacts.get(via)
    name = {"phone": "Telefone", "email": "Email", "both": "Telefone e e-mail"}.get(via)
    if name is None:
        return ""
    return f" ({name}: {_inline(contact)})" if contact is not None else f" ({name})"


def _single_source_header(person: _Person) -> str | None:
    via = person.via
    if via == "phone":
        header = SINGLE_SOURCE_PHONE_HEADER
    elif via == "email":
        header = SINGLE_SOURCE_EMAIL_HEADER
    else:
        return None
    contact = person.contacts.get(via)
    return f"{header}: {_inline(contact)}" if contact is not None else header


def format_lead_message(
    people: Sequence[PersonSource],
    *,
    layout: Layout,
    income_multiplier: float = DEFAULT_INCOME_MULTIPLIER,
) -> str:
    """Format the whole message for a lead. Never raises on decodable dossiers.

    Args:
        people: The people found, in display order (the phone's person first).
        layout: ``webhook`` for ``/c2s/enrich`` and the webhook, ``process`` for
            ``/leads/process``; see the module docstring for both.
        income_multiplier: Factor applied to income figures.

    Returns:
        The message, or ``""`` when ``people`` is empty.
    """
    merged = _merge_by_cpf(people)
    blocks = [format_block(p.dossier, income_multiplier) for p in merged]
    if not merged:
        return ""
    if len(merged) == 1:
        person = merged[0]
        if person.via == "both":
            return f"{SAME_PERSON_HEADER}\n\n{blocks[0]}"
        header = _single_source_header(person) if layout == "webhook" else None
        return blocks[0] if header is None else f"{header}\n\n{blocks[0]}"
    if layout == "process":
        return PROCESS_SEPARATOR.join(blocks)
    sections = [
        f"═══ PESSOA {n}{_label(person)} ═══\n{block}"
        for n, (person, block) in enumerate(zip(merged, blocks, strict=True), start=1)
    ]
    return f"{DIFFERENT_PEOPLE_HEADER}\n\n" + "\n\n".join(sections)
