"""The Work API ``modulo=cpf`` dossier and what we derive from it.

Decoding is tolerant by design (``docs/contract.md`` §3.3): the upstream's payloads are large,
inconsistent (numbers where strings are documented, ``null`` for empty sections) and grow new
keys without notice. :func:`decode_dossier` therefore accepts any JSON object:

* every field is optional, unknown keys are ignored;
* a number where a string is expected becomes its decimal text (``"pis": 123`` -> ``"123"``);
* any other wrongly typed value (an object where a string is expected, a string where a list is
  expected...) is dropped and the field keeps its default (``None`` or an empty tuple);
* list items of the wrong shape are skipped.

Only input that is not JSON, or whose top level is not an object, is rejected.

:func:`normalize_dossier` turns a dossier into a :class:`NormalizedPerson`, the document stored
as ``normalized_data`` and returned by the API (``docs/contract.md`` §5, §7): a missing sex
stays ``None`` (never a default ``M``), and the risk-to-quality mapping rewards low risk
(``BAIXISSIMO RISCO`` -> 0.9).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import msgspec
import msgspec.inspect as mi

from domain.documents import normalize_cpf, only_digits
from domain.emails import is_valid_email, normalize_email
from domain.errors import InvalidInput
from domain.phones import parse_br_phone, storage_digits
from domain.text import BrazilianState, fold, parse_cep, parse_uf

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_QUALITY_SCORE",
    "RISK_QUALITY",
    "BrazilianState",
    "DadosBasicos",
    "DadosEconomicos",
    "Dossier",
    "Email",
    "Empresa",
    "Endereco",
    "Flags",
    "NormalizedAddress",
    "NormalizedCompany",
    "NormalizedEmail",
    "NormalizedPerson",
    "NormalizedPhone",
    "NormalizedRelative",
    "Obito",
    "Parente",
    "PoderAquisitivo",
    "Profissao",
    "RegistroGeral",
    "Score",
    "SerasaMosaic",
    "SituacaoCadastral",
    "Telefone",
    "TituloEleitor",
    "decode_dossier",
    "dossier_from_json_object",
    "normalize_dossier",
    "parse_amount",
    "parse_br_date",
    "quality_score_for_risk",
]

# Scalars the upstream sends either as text or as a JSON number.
TextOrInt: TypeAlias = str | int | None


# --------------------------------------------------------------------------------------------
# Wire model: names follow the Work API (``rename="camel"``, explicit names where its casing is
# irregular). Everything is optional.
# --------------------------------------------------------------------------------------------


class Obito(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``DadosBasicos.obito``: death record (``obito`` is ``"NÃO"`` for living people)."""

    obito: str | None = None
    data_obito: str | None = None


class SituacaoCadastral(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``DadosBasicos.situacaoCadastral``: status at the federal revenue (``REGULAR``...)."""

    codigo_situacao_cadastral: TextOrInt = None
    descricao_situacao_cadastral: str | None = None
    data_situacao_cadastral: str | None = None


class DadosBasicos(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``DadosBasicos``: identity of the person."""

    nome: str | None = None
    cpf: str | None = None
    cns: str | None = None
    data_nascimento: str | None = None
    sexo: str | None = None
    cor: str | None = None
    nome_mae: str | None = None
    nome_pai: str | None = None
    municipio_nascimento: str | None = None
    escolaridade: str | None = None
    estado_civil: str | None = None
    nacionalidade: str | None = None
    obito: Obito | None = None
    situacao_cadastral: SituacaoCadastral | None = None


class PoderAquisitivo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``DadosEconomicos.poderAquisitivo``: purchasing-power band."""

    codigo_poder_aquisitivo: TextOrInt = None
    poder_aquisitivo_descricao: str | None = None
    renda_poder_aquisitivo: str | None = None
    codigo_faixa_renda: TextOrInt = None
    faixa_poder_aquisitivo: str | None = None


class Score(msgspec.Struct, frozen=True, kw_only=True):
    """``DadosEconomicos.score``: credit scores and their risk bands."""

    score_csb: TextOrInt = msgspec.field(default=None, name="scoreCSB")
    score_csb_faixa_risco: str | None = msgspec.field(default=None, name="scoreCSBFaixaRisco")
    score_csba: TextOrInt = msgspec.field(default=None, name="scoreCSBA")
    score_csba_faixa_risco: str | None = msgspec.field(default=None, name="scoreCSBAFaixaRisco")


class SerasaMosaic(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``DadosEconomicos.serasaMosaic``: consumer segmentation."""

    codigo_mosaic: str | None = None
    descricao_mosaic: str | None = None
    classe_mosaic: str | None = None
    codigo_mosaic_novo: str | None = None
    descricao_mosaic_novo: str | None = None
    classe_mosaic_novo: str | None = None


class DadosEconomicos(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``DadosEconomicos``: income (decimal comma, ``"8500,50"``), purchasing power, scores."""

    renda: str | None = None
    renda_presumida: str | None = None
    poder_aquisitivo: PoderAquisitivo | None = None
    score: Score | None = None
    serasa_mosaic: SerasaMosaic | None = None


class Profissao(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``profissao``: occupation (``pis`` is a JSON number upstream)."""

    cbo: TextOrInt = None
    cbo_descricao: str | None = None
    pis: TextOrInt = None


class Empresa(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One of ``empresas``: a company the person is related to."""

    cnpj: str | None = None
    tipo_relacao: str | None = None
    relacao: str | None = None
    admissao: str | None = None
    demissao: str | None = None


class RegistroGeral(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``registroGeral``: the state identity card (RG)."""

    numero: str | None = None
    orgao_emissor: str | None = None
    data_emissao: str | None = None


class TituloEleitor(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``tituloEleitor``: voter registration (integers upstream)."""

    titulo_eleitor_numero: TextOrInt = None
    zona_titulo: TextOrInt = None
    secao_titulo: TextOrInt = None


class Endereco(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One of ``enderecos``. The street number is ``logradouroNumero`` (not ``numero``)."""

    tipo_logradouro: str | None = None
    logradouro: str | None = None
    logradouro_numero: TextOrInt = None
    complemento: str | None = None
    bairro: str | None = None
    cidade: str | None = None
    uf: str | None = None
    cep: TextOrInt = None


class Telefone(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One of ``telefones``: digits with DDD, ``whatsapp`` is ``"SIM"`` or null."""

    telefone: TextOrInt = None
    status: str | None = None
    tipo: str | None = None
    operadora: str | None = None
    whatsapp: str | None = None


class Email(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One of ``emails``."""

    email: str | None = None
    prioridade: str | None = None
    qualidade: str | None = None
    email_pessoal: str | None = None
    blacklist: str | None = None


class Parente(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One of ``parentes``: a relative (``grauParentesco`` is ``MAE``, ``PAI``...)."""

    nome_parente: str | None = None
    cpf_parente: str | None = None
    grau_parentesco: str | None = None


class Flags(msgspec.Struct, frozen=True, kw_only=True):
    """``flags``: booleans with dunder-style wire names."""

    pessoa_exposta_politicamente: bool | None = msgspec.field(
        default=None, name="__pessoa_exposta_politicamente__"
    )
    beneficiario_auxilios: bool | None = msgspec.field(
        default=None, name="__beneficiario_auxilios__"
    )
    servidor_publico_siape: bool | None = msgspec.field(
        default=None, name="__servidor_publico_siape__"
    )


class Dossier(msgspec.Struct, frozen=True, kw_only=True):
    """A Work API ``modulo=cpf`` response (the sections this service uses).

    ``status``, ``statusMsg``, ``reason`` and ``erro`` are kept so callers can recognise the
    soft errors the upstream returns inside HTTP 200 bodies.
    """

    status: TextOrInt = None
    status_msg: str | None = msgspec.field(default=None, name="statusMsg")
    reason: str | None = None
    erro: str | None = None
    dados_basicos: DadosBasicos | None = msgspec.field(default=None, name="DadosBasicos")
    dados_economicos: DadosEconomicos | None = msgspec.field(default=None, name="DadosEconomicos")
    profissao: Profissao | None = None
    empresas: tuple[Empresa, ...] = ()
    registro_geral: RegistroGeral | None = msgspec.field(default=None, name="registroGeral")
    titulo_eleitor: TituloEleitor | None = msgspec.field(default=None, name="tituloEleitor")
    enderecos: tuple[Endereco, ...] = ()
    telefones: tuple[Telefone, ...] = ()
    emails: tuple[Email, ...] = ()
    parentes: tuple[Parente, ...] = ()
    flags: Flags | None = None


# --------------------------------------------------------------------------------------------
# Tolerant decoding
# --------------------------------------------------------------------------------------------


class _Dropped:
    """Marker for a value that does not fit its field and is left out."""


_DROPPED = _Dropped()
_DOSSIER_INFO = mi.type_info(Dossier)


def _clean_scalar(value: object, kind: mi.Type) -> object:
    if isinstance(kind, mi.NoneType):
        return None if value is None else _DROPPED
    if isinstance(kind, mi.StrType):
        return value if isinstance(value, str) else _DROPPED
    if isinstance(kind, mi.BoolType):
        return value if isinstance(value, bool) else _DROPPED
    if isinstance(kind, mi.IntType):
        # bool is an int subclass in Python but never an integer in JSON.
        return value if isinstance(value, int) and not isinstance(value, bool) else _DROPPED
    if isinstance(kind, mi.FloatType):
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return value if is_number else _DROPPED
    # A field type this cleaner does not know: drop rather than risk a failing convert.
    return _DROPPED


def _clean(value: object, kind: mi.Type) -> object:
    """Return ``value`` reshaped to fit ``kind``, or ``_DROPPED`` when it cannot fit."""
    if isinstance(kind, mi.UnionType):
        for member in kind.types:
            cleaned = _clean(value, member)
            if cleaned is not _DROPPED:
                return cleaned
        # Numbers where text is expected: keep their decimal text.
        if (
            any(isinstance(member, mi.StrType) for member in kind.types)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return str(value)
        return _DROPPED
    if isinstance(kind, mi.StructType):
        if not isinstance(value, dict):
            return _DROPPED
        out: dict[str, object] = {}
        for field in kind.fields:
            if field.encode_name in value:
                cleaned = _clean(value[field.encode_name], field.type)
                if cleaned is not _DROPPED:
                    out[field.encode_name] = cleaned
        return out
    if isinstance(kind, mi.VarTupleType | mi.ListType):
        if not isinstance(value, list):
            return _DROPPED
        items = (_clean(item, kind.item_type) for item in value)
        return [item for item in items if item is not _DROPPED]
    return _clean_scalar(value, kind)


_DOSSIER_DECODER: Final = msgspec.json.Decoder(Dossier)


def decode_dossier(raw: bytes | str) -> Dossier:
    """Decode a Work API ``modulo=cpf`` body, tolerating everything but non-objects.

    Well-typed payloads take msgspec's typed fast path; anything else is decoded generically and
    cleaned field by field (see the module docstring), so both paths give the same result for
    the same well-typed input.

    Args:
        raw: The response body.

    Returns:
        The dossier; sections that are missing or unusable are ``None`` or empty.

    Raises:
        InvalidInput: ``field="dossier"`` when ``raw`` is not JSON msgspec can decode, or its
            top level is not an object.
    """
    try:
        return _DOSSIER_DECODER.decode(raw)
    except msgspec.ValidationError:
        pass  # valid JSON of another shape: clean it below
    except msgspec.DecodeError:
        raise InvalidInput("dossier", "dossier is not valid JSON") from None
    try:
        generic: object = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        # Valid syntax but unrepresentable values (numbers beyond float range).
        raise InvalidInput("dossier", "dossier is not valid JSON") from None
    if not isinstance(generic, dict):
        raise InvalidInput("dossier", "dossier must be a JSON object")
    return dossier_from_json_object(generic)


def dossier_from_json_object(obj: Mapping[str, object]) -> Dossier:
    """Build a dossier from an already decoded JSON object, with the same tolerance.

    For callers that hold the payload as Python objects (a JSONB column decoded by the driver).

    Args:
        obj: A JSON object as decoded by any JSON library (dicts, lists, str, int, float, bool,
            None).

    Returns:
        The dossier, equal to ``decode_dossier`` of the same JSON text.
    """
    return msgspec.convert(_clean(dict(obj), _DOSSIER_INFO), Dossier)


# --------------------------------------------------------------------------------------------
# Conversions shared with the message formatter
# --------------------------------------------------------------------------------------------

_DATE_BR = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")
_DATE_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T].*)?")
_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Longer digit runs are not amounts of money; refusing them keeps Decimal arithmetic in range.
_MAX_AMOUNT_LENGTH = 30


def parse_br_date(raw: str | None) -> dt.date | None:
    """Parse a Work API date: ``DD/MM/YYYY``, or ``YYYY-MM-DD[ HH:MM:SS]`` as some modules send.

    Args:
        raw: The text, or None.

    Returns:
        The date, or None when absent or not a real calendar date.
    """
    if raw is None:
        return None
    text = raw.strip()
    if match := _DATE_BR.fullmatch(text):
        day, month, year = (int(g) for g in match.groups())
    elif match := _DATE_ISO.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
    else:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def parse_amount(raw: str | None) -> Decimal | None:
    """Parse a Brazilian money amount: ``8500,50``, ``8.500,50`` or ``8500.50``.

    With a decimal comma, dots are thousands separators (``8.500,50`` is 8500.50); without one,
    a dot is the decimal point. The value is exact: no float is involved.

    Args:
        raw: The text, or None.

    Returns:
        The amount, or None when absent or not a plain number (no exponents, no ``NaN``).
    """
    if raw is None:
        return None
    text = raw.strip()
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    if len(text) > _MAX_AMOUNT_LENGTH or not _AMOUNT.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _text(raw: str | int | None) -> str | None:
    """Trimmed text, None when absent or blank."""
    if raw is None:
        return None
    text = str(raw).strip()
    return text or None


def _yes_no(raw: str | None) -> bool | None:
    if raw is None:
        return None
    folded = fold(raw)
    if folded in {"SIM", "S", "TRUE"}:
        return True
    if folded in {"NAO", "N", "FALSE"}:
        return False
    return None


# --------------------------------------------------------------------------------------------
# Normalised person
# --------------------------------------------------------------------------------------------


# Low credit risk means a trustworthy, high-quality record (docs/contract.md §5).
RISK_QUALITY: dict[str, float] = {
    "BAIXISSIMO RISCO": 0.9,
    "BAIXO RISCO": 0.7,
    "MEDIO RISCO": 0.5,
    "ALTO RISCO": 0.3,
    "ALTISSIMO RISCO": 0.1,
}
DEFAULT_QUALITY_SCORE = 0.5

# Placeholders the upstream puts where a parent's name is unknown.
_NO_INFORMATION = frozenset({"SEM INFORMACAO", "NAO INFORMADO", "NAO CONSTA", "NAO CONSTA."})
# The minimum length for anything that could be a phone number (docs/contract.md §6.2).
_MIN_PHONE_DIGITS = 8
_CNPJ_LENGTH = 14
_ACTIVE_UNTIL_YEAR = 9999  # "31/12/9999" marks a relation that has not ended


class NormalizedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """An e-mail of the person, lower-cased and validated.

    Attributes:
        address: The normalised address.
        priority: Upstream ``prioridade`` (``MUITO ALTA``...).
        quality: Upstream ``qualidade`` (``OTIMO``, ``BOM``...).
        is_personal: ``emailPessoal`` as a boolean, None when unknown.
        is_blacklisted: ``blacklist`` as a boolean, None when unknown.
    """

    address: str
    priority: str | None = None
    quality: str | None = None
    is_personal: bool | None = None
    is_blacklisted: bool | None = None


class NormalizedPhone(msgspec.Struct, frozen=True, kw_only=True):
    """A phone of the person.

    Attributes:
        number: Storage digits (DDD + number, no ``55``).
        is_whatsapp: True when the upstream flags it as WhatsApp.
        operator: Upstream ``operadora``.
        type: Upstream ``tipo`` (``CELULAR``, ``TELEFONE RESIDENCIAL``...).
        status: Upstream ``status`` (``ATIVO``...).
    """

    number: str
    is_whatsapp: bool = False
    operator: str | None = None
    type: str | None = None
    status: str | None = None


class NormalizedAddress(msgspec.Struct, frozen=True, kw_only=True):
    """An address of the person.

    Attributes:
        street_type: ``tipoLogradouro`` (``R``, ``AV``...).
        street: ``logradouro``.
        number: ``logradouroNumero``.
        complement: ``complemento``.
        neighborhood: ``bairro``.
        city: ``cidade``.
        state: Upper-case UF, None unless one of the 27 Brazilian units.
        zip_code: CEP as 8 digits, None when it is not 8 digits.
    """

    street_type: str | None = None
    street: str | None = None
    number: str | None = None
    complement: str | None = None
    neighborhood: str | None = None
    city: str | None = None
    state: BrazilianState | None = None
    zip_code: str | None = None


class NormalizedRelative(msgspec.Struct, frozen=True, kw_only=True):
    """A relative listed in ``parentes``.

    Attributes:
        name: ``nomeParente``.
        cpf: ``cpfParente`` when it is a valid CPF, else None.
        relationship: ``grauParentesco`` (``MAE``, ``PAI``...).
    """

    name: str | None = None
    cpf: str | None = None
    relationship: str | None = None


class NormalizedCompany(msgspec.Struct, frozen=True, kw_only=True):
    """A company relation listed in ``empresas``.

    Attributes:
        cnpj: 14 digits, None when the value has another length.
        relation_type: ``tipoRelacao`` (``QSA``, ``REPRESENTANTELEGAL``).
        relation: ``relacao`` (``SOCIO-ADMINISTRADOR``...).
        started_on: ``admissao``.
        ended_on: ``demissao``; None while active (the upstream writes ``31/12/9999``).
        is_active: Whether the relation has not ended.
    """

    cnpj: str | None = None
    relation_type: str | None = None
    relation: str | None = None
    started_on: dt.date | None = None
    ended_on: dt.date | None = None
    is_active: bool = True


class NormalizedPerson(msgspec.Struct, frozen=True, kw_only=True):
    """What the service keeps from a dossier: stored as ``normalized_data``, returned by the API.

    Every key is always encoded (no ``omit_defaults``) so the stored document has a stable shape;
    the defaults exist so documents stored before a field was added still decode.

    Attributes:
        cpf: The person's CPF (11 digits) when ``DadosBasicos.cpf`` is valid, else None.
        name: Name as registered.
        normalized_name: Name upper-cased with collapsed spaces (the legacy canonical form).
        birth_date: From ``DD/MM/YYYY``; None when absent or unparsable.
        sex: ``M`` or ``F``; None when absent or unrecognised (never defaulted).
        mother_name: None for the upstream's "no information" placeholders.
        father_name: None for ``SEM INFORMAÇÃO`` and similar placeholders.
        marital_status: ``estadoCivil`` (``CASADO(A)``...).
        rg: ``registroGeral.numero``.
        occupation: ``profissao.cboDescricao``.
        emails: Valid, lower-cased, de-duplicated, in upstream order.
        phones: Storage digits, de-duplicated, in upstream order.
        addresses: Entries with at least a street, city, state or zip code.
        relatives: From ``parentes``.
        companies: From ``empresas``.
        income: ``DadosEconomicos.renda`` as a number (decimal comma understood).
        purchasing_power: ``poderAquisitivoDescricao``.
        income_range: ``faixaPoderAquisitivo`` as received.
        credit_score: ``scoreCSBA`` as an integer.
        risk_band: ``scoreCSBAFaixaRisco`` as received (trimmed).
        quality_score: From the risk band: BAIXISSIMO 0.9, BAIXO 0.7, MEDIO 0.5, ALTO 0.3,
            ALTISSIMO 0.1; 0.5 when unknown.
    """

    cpf: str | None = None
    name: str | None = None
    normalized_name: str | None = None
    birth_date: dt.date | None = None
    sex: Literal["M", "F"] | None = None
    mother_name: str | None = None
    father_name: str | None = None
    marital_status: str | None = None
    rg: str | None = None
    occupation: str | None = None
    emails: tuple[NormalizedEmail, ...] = ()
    phones: tuple[NormalizedPhone, ...] = ()
    addresses: tuple[NormalizedAddress, ...] = ()
    relatives: tuple[NormalizedRelative, ...] = ()
    companies: tuple[NormalizedCompany, ...] = ()
    income: float | None = None
    purchasing_power: str | None = None
    income_range: str | None = None
    credit_score: int | None = None
    risk_band: str | None = None
    quality_score: float = DEFAULT_QUALITY_SCORE


def quality_score_for_risk(risk_band: str | None) -> float:
    """Map a ``scoreCSBAFaixaRisco`` label to a record quality score.

    Args:
        risk_band: The label (case, accents and spacing are ignored), or None.

    Returns:
        0.9 for ``BAIXISSIMO RISCO`` down to 0.1 for ``ALTISSIMO RISCO``; 0.5 when unknown.
    """
    if risk_band is None:
        return DEFAULT_QUALITY_SCORE
    return RISK_QUALITY.get(fold(risk_band), DEFAULT_QUALITY_SCORE)


def _valid_cpf(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return normalize_cpf(raw)
    except InvalidInput:
        return None


def _person_name(raw: str | None) -> str | None:
    text = _text(raw)
    if text is None or fold(text) in _NO_INFORMATION:
        return None
    return text


def _sex(raw: str | None) -> Literal["M", "F"] | None:
    text = _text(raw)
    if text is None:
        return None
    first = text[0].upper()
    if first == "M":
        return "M"
    if first == "F":
        return "F"
    return None


def _emails(items: tuple[Email, ...]) -> tuple[NormalizedEmail, ...]:
    seen: set[str] = set()
    out: list[NormalizedEmail] = []
    for item in items:
        if item.email is None:
            continue
        address = normalize_email(item.email)
        if address in seen or not is_valid_email(address):
            continue
        seen.add(address)
        out.append(
            NormalizedEmail(
                address=address,
                priority=_text(item.prioridade),
                quality=_text(item.qualidade),
                is_personal=_yes_no(item.email_pessoal),
                is_blacklisted=_yes_no(item.blacklist),
            )
        )
    return tuple(out)


def _phone_digits(raw: str) -> str:
    """``storage_digits(raw)`` with one libphonenumber parse instead of two for a valid number.

    ``storage_digits`` parses until a fixed point; a valid number's national digits parse back
    to themselves, so the confirming second parse is skipped. Invalid input takes the general
    path unchanged.
    """
    digits = only_digits(raw)
    try:
        return parse_br_phone(digits).national
    except InvalidInput:
        return storage_digits(digits)


def _phones(items: tuple[Telefone, ...]) -> tuple[NormalizedPhone, ...]:
    by_number: dict[str, NormalizedPhone] = {}
    for item in items:
        if item.telefone is None:
            continue
        number = _phone_digits(str(item.telefone))
        if len(number) < _MIN_PHONE_DIGITS:
            continue
        is_whatsapp = _yes_no(item.whatsapp) is True
        previous = by_number.get(number)
        if previous is not None:
            # Keep the first entry, but a WhatsApp flag on any duplicate is still true.
            if is_whatsapp and not previous.is_whatsapp:
                by_number[number] = msgspec.structs.replace(previous, is_whatsapp=True)
            continue
        by_number[number] = NormalizedPhone(
            number=number,
            is_whatsapp=is_whatsapp,
            operator=_text(item.operadora),
            type=_text(item.tipo),
            status=_text(item.status),
        )
    return tuple(by_number.values())


def _addresses(items: tuple[Endereco, ...]) -> tuple[NormalizedAddress, ...]:
    out: list[NormalizedAddress] = []
    for item in items:
        address = NormalizedAddress(
            street_type=_text(item.tipo_logradouro),
            street=_text(item.logradouro),
            number=_text(item.logradouro_numero),
            complement=_text(item.complemento),
            neighborhood=_text(item.bairro),
            city=_text(item.cidade),
            state=parse_uf(_text(item.uf)),
            zip_code=parse_cep(item.cep),
        )
        # An address with none of these is noise and is skipped (docs/contract.md §5).
        if address.street or address.city or address.state or address.zip_code:
            out.append(address)
    return tuple(out)


def _relatives(items: tuple[Parente, ...]) -> tuple[NormalizedRelative, ...]:
    out: list[NormalizedRelative] = []
    for item in items:
        name = _person_name(item.nome_parente)
        cpf = _valid_cpf(item.cpf_parente)
        if name or cpf:
            out.append(
                NormalizedRelative(name=name, cpf=cpf, relationship=_text(item.grau_parentesco))
            )
    return tuple(out)


def _companies(items: tuple[Empresa, ...]) -> tuple[NormalizedCompany, ...]:
    out: list[NormalizedCompany] = []
    for item in items:
        digits = only_digits(item.cnpj or "")
        ended_on = parse_br_date(item.demissao)
        is_active = ended_on is None or ended_on.year == _ACTIVE_UNTIL_YEAR
        out.append(
            NormalizedCompany(
                cnpj=digits if len(digits) == _CNPJ_LENGTH else None,
                relation_type=_text(item.tipo_relacao),
                relation=_text(item.relacao),
                started_on=parse_br_date(item.admissao),
                ended_on=None if is_active else ended_on,
                is_active=is_active,
            )
        )
    return tuple(out)


def _income(raw: str | None) -> float | None:
    amount = parse_amount(raw)
    if amount is None:
        return None
    value = float(amount)
    return value if math.isfinite(value) else None


def _credit_score(raw: str | int | None) -> int | None:
    if isinstance(raw, int):
        return raw
    text = _text(raw)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def normalize_dossier(d: Dossier) -> NormalizedPerson:
    """Derive the stored/returned person document from a dossier. Never raises.

    Args:
        d: A decoded dossier (any shape :func:`decode_dossier` accepts).

    Returns:
        The normalised person; unknown facts are None or empty.
    """
    basic = d.dados_basicos or DadosBasicos()
    economic = d.dados_economicos or DadosEconomicos()
    power = economic.poder_aquisitivo or PoderAquisitivo()
    score = economic.score or Score()
    name = _text(basic.nome)
    risk_band = _text(score.score_csba_faixa_risco)
    return NormalizedPerson(
        cpf=_valid_cpf(basic.cpf),
        name=name,
        normalized_name=" ".join(name.upper().split()) if name else None,
        birth_date=parse_br_date(basic.data_nascimento),
        sex=_sex(basic.sexo),
        mother_name=_person_name(basic.nome_mae),
        father_name=_person_name(basic.nome_pai),
        marital_status=_text(basic.estado_civil),
        rg=_text(d.registro_geral.numero) if d.registro_geral else None,
        occupation=_text(d.profissao.cbo_descricao) if d.profissao else None,
        emails=_emails(d.emails),
        phones=_phones(d.telefones),
        addresses=_addresses(d.enderecos),
        relatives=_relatives(d.parentes),
        companies=_companies(d.empresas),
        income=_income(economic.renda),
        purchasing_power=_text(power.poder_aquisitivo_descricao),
        income_range=_text(power.faixa_poder_aquisitivo),
        credit_score=_credit_score(score.score_csba),
        risk_band=risk_band,
        quality_score=quality_score_for_risk(risk_band),
    )
