"""Synthetic Brazilian people for the sandbox upstreams: deterministic, plausible, never real.

Every person is a pure function of ``(seed, cpf)``: :meth:`SyntheticPeople.by_cpf` regenerates
the same person from any valid CPF, so the sandbox answers for any CPF without storing anyone and
its memory stays flat in million-party benchmarks. Person ``i`` of a seed is simply the person of
the i-th CPF derived from the seed (:meth:`SyntheticPeople.cpf_for`).

The reverse lookups Diretrix needs (phone or e-mail -> CPF) cannot be computed, so a bounded
registry holds the contacts of the first ``registry_size`` people of the seed (built lazily on
first use) plus those of people the sandbox handed out since (leads created for them), capped at
``max_extra_contacts`` entries (oldest forgotten first).

What is synthetic: names are random combinations of common given names and surnames; phones
follow the real DDD/mobile numbering so they validate as Brazilian numbers; e-mails use the
reserved ``example.*`` domains (RFC 2606); streets and CEPs are plausible for the city's range.
A random valid CPF may, by arithmetic necessity, coincide with a real person's number: nothing
else about that person is real.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import threading
import unicodedata
from collections import OrderedDict
from typing import Any, Literal

import msgspec

from domain.documents import cnpj_check_digits, cpf_check_digits, normalize_cpf
from domain.phones import storage_digits

__all__ = [
    "Address",
    "LruBytes",
    "Person",
    "PhoneEntry",
    "SyntheticPeople",
    "lead_id_for",
]

_MALE_FIRST = (
    "JOÃO", "JOSÉ", "ANTONIO", "FRANCISCO", "CARLOS", "PAULO", "PEDRO", "LUCAS", "LUIZ",
    "MARCOS", "GABRIEL", "RAFAEL", "DANIEL", "MARCELO", "BRUNO", "EDUARDO", "FELIPE", "RODRIGO",
    "MATEUS", "GUSTAVO", "THIAGO", "FERNANDO", "RICARDO", "ANDRÉ", "LEONARDO", "VINICIUS",
    "DIEGO", "SERGIO", "ROBERTO", "HENRIQUE", "SAMUEL", "GUILHERME", "ALEXANDRE", "FABIO",
    "IGOR", "CAIO", "OTAVIO", "RENATO", "MURILO", "CÉSAR",
)  # fmt: skip
_FEMALE_FIRST = (
    "MARIA", "ANA", "FRANCISCA", "ANTONIA", "ADRIANA", "JULIANA", "MARCIA", "FERNANDA",
    "PATRICIA", "ALINE", "SANDRA", "CAMILA", "AMANDA", "BRUNA", "JESSICA", "LETICIA", "JULIA",
    "LUCIANA", "VANESSA", "MARIANA", "GABRIELA", "BEATRIZ", "LARISSA", "RAFAELA", "CAROLINA",
    "RENATA", "DANIELA", "CLAUDIA", "TATIANA", "SIMONE", "PRISCILA", "HELENA", "ISABELA",
    "LAURA", "VITÓRIA", "BIANCA", "RAQUEL", "CRISTINA", "DÉBORA", "CONCEIÇÃO",
)  # fmt: skip
_MALE_MIDDLE = ("", "", "", "EDUARDO", "HENRIQUE", "AUGUSTO", "LUIZ", "CARLOS")
_FEMALE_MIDDLE = ("", "", "", "APARECIDA", "CRISTINA", "LUIZA", "HELENA", "FERNANDA")
_LAST = (
    "SILVA", "SANTOS", "OLIVEIRA", "SOUZA", "RODRIGUES", "FERREIRA", "ALVES", "PEREIRA", "LIMA",
    "GOMES", "COSTA", "RIBEIRO", "MARTINS", "CARVALHO", "ALMEIDA", "LOPES", "SOARES",
    "FERNANDES", "VIEIRA", "BARBOSA", "ROCHA", "DIAS", "NASCIMENTO", "ANDRADE", "MOREIRA",
    "NUNES", "MARQUES", "MACHADO", "MENDES", "FREITAS", "CARDOSO", "RAMOS", "GONÇALVES",
    "SANTANA", "TEIXEIRA", "ARAÚJO", "PINTO", "CAVALCANTI", "MONTEIRO", "MOURA", "CORREIA",
    "BATISTA", "CAMPOS", "REIS", "DUARTE", "AZEVEDO", "BORGES", "XAVIER", "MIRANDA", "PRADO",
)  # fmt: skip

# (UF, DDD, city, first and last 5-digit CEP prefix of the city's range); repeated rows weight
# the draw towards the big metropolitan areas, like a real lead base.
_PLACES = (
    ("SP", "11", "SAO PAULO", 1000, 5999),
    ("SP", "11", "SAO PAULO", 1000, 5999),
    ("SP", "11", "SAO PAULO", 1000, 5999),
    ("SP", "19", "CAMPINAS", 13000, 13139),
    ("SP", "13", "SANTOS", 11000, 11099),
    ("SP", "16", "RIBEIRAO PRETO", 14000, 14109),
    ("RJ", "21", "RIO DE JANEIRO", 20000, 23799),
    ("RJ", "21", "RIO DE JANEIRO", 20000, 23799),
    ("RJ", "24", "PETROPOLIS", 25600, 25779),
    ("MG", "31", "BELO HORIZONTE", 30000, 31999),
    ("MG", "34", "UBERLANDIA", 38400, 38415),
    ("RS", "51", "PORTO ALEGRE", 90000, 91999),
    ("PR", "41", "CURITIBA", 80000, 82999),
    ("SC", "48", "FLORIANOPOLIS", 88000, 88099),
    ("BA", "71", "SALVADOR", 40000, 42599),
    ("PE", "81", "RECIFE", 50000, 52999),
    ("CE", "85", "FORTALEZA", 60000, 61599),
    ("DF", "61", "BRASILIA", 70000, 72799),
    ("GO", "62", "GOIANIA", 74000, 74899),
    ("PA", "91", "BELEM", 66000, 66999),
    ("AM", "92", "MANAUS", 69000, 69099),
    ("ES", "27", "VITORIA", 29000, 29099),
)
_STREET_TYPES = ("R", "R", "R", "AV", "AV", "AL", "TV")
_STREETS = (
    "DAS FLORES", "SAO JOAO", "XV DE NOVEMBRO", "SETE DE SETEMBRO", "SANTOS DUMONT",
    "TIRADENTES", "DOM PEDRO II", "BRASIL", "DAS PALMEIRAS", "DOS ANDRADAS", "MARECHAL DEODORO",
    "GETULIO VARGAS", "RIO BRANCO", "BARAO DE MAUA", "DAS ACACIAS", "DOS GIRASSOIS",
    "PROFESSOR ALMEIDA", "VISCONDE DE PARNAIBA", "JOSE BONIFACIO", "DUQUE DE CAXIAS",
)  # fmt: skip
_NEIGHBOURHOODS = (
    "CENTRO", "JARDIM AMERICA", "VILA NOVA", "BELA VISTA", "SANTA CECILIA", "BOA VISTA",
    "SAO JOSE", "JARDIM PAULISTA", "VILA MARIANA", "LIBERDADE", "JARDIM EUROPA", "CAMPO BELO",
    "SANTO AMARO", "VILA OLIMPIA", "CIDADE NOVA", "PARQUE INDUSTRIAL",
)  # fmt: skip
_COMPLEMENTS = (
    "",
    "",
    "",
    "APTO 12",
    "APTO 101",
    "APTO 502",
    "CASA 2",
    "BLOCO B APTO 34",
    "FUNDOS",
)
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")
_OPERATORS = ("VIVO", "TIM", "CLARO", "OI")
_COLOURS = ("BRANCA", "PARDA", "PRETA", "AMARELA")
_SCHOOLING = (
    "ENSINO FUNDAMENTAL COMPLETO",
    "ENSINO MEDIO COMPLETO",
    "ENSINO SUPERIOR INCOMPLETO",
    "ENSINO SUPERIOR COMPLETO",
    "POS-GRADUACAO",
)
_MARITAL = ("SOLTEIRO(A)", "CASADO(A)", "CASADO(A)", "DIVORCIADO(A)", "VIUVO(A)")
_OCCUPATIONS = (
    ("252505", "Analista de sistemas"),
    ("411005", "Auxiliar de escritório"),
    ("521110", "Vendedor de comércio varejista"),
    ("223505", "Enfermeiro"),
    ("241005", "Advogado"),
    ("214205", "Engenheiro civil"),
    ("231210", "Professor de ensino fundamental"),
    ("782510", "Motorista de caminhão"),
    ("142105", "Gerente administrativo"),
    ("322205", "Técnico de enfermagem"),
)
# (lower bound, upper bound or None, code, label): "De R$ 7018 até R$ 15000" is the real style.
_INCOME_BANDS = (
    (0, 1212, "1", "MUITO BAIXO"),
    (1212, 2424, "2", "BAIXO"),
    (2424, 4500, "3", "MEDIO BAIXO"),
    (4500, 7018, "4", "MEDIO"),
    (7018, 15000, "5", "ALTO"),
    (15000, 30000, "6", "MUITO ALTO"),
    (30000, None, "7", "ALTISSIMO"),
)
_RISK_BANDS = (
    (850, "BAIXISSIMO RISCO"),
    (700, "BAIXO RISCO"),
    (500, "MEDIO RISCO"),
    (300, "ALTO RISCO"),
    (0, "ALTISSIMO RISCO"),
)
_MOSAICS = (
    ("A02", "Elite urbana qualificada", "Elites Brasileiras"),
    ("B05", "Familias de classe media", "Experientes Urbanos de Vida Confortavel"),
    ("C09", "Jovens trabalhadores urbanos", "Jovens Urbanos"),
    ("D13", "Trabalhadores do interior", "Vida Rural"),
    ("E17", "Aposentados de renda media", "Adultos Maduros"),
)
_CONSUMER_FLAGS = (
    "credito_pessoal_pre_aprovado", "credito_imobiliario_pre_aprovado", "classe_media",
    "possui_luxo", "possui_investimentos", "possui_cartao_de_credito", "possui_casa_propria",
    "possui_seguro_automotivo", "possui_previdencia_privada", "realizou_viagens",
)  # fmt: skip
_CONSUMER_SCORES = (
    "credito_pessoal", "financiamento_veiculo", "compra_internet", "casa_propria",
    "seguro_saude", "investimentos", "turismo", "luxo",
)  # fmt: skip

_LEAD_MARKER = "5a"  # first hex digits of a virtual lead id
_LEAD_ID_LENGTH = 32
_FIRST_BIRTH = dt.date(1950, 1, 1).toordinal()
_LAST_BIRTH = dt.date(2005, 12, 31).toordinal()
_TODAY = dt.date(2025, 11, 22)  # fixed, so ages never drift between runs


def _digest_int(*parts: object) -> int:
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    # Synthetic data, not security: a seeded PRNG is exactly what determinism needs.
    return random.Random(_digest_int(*parts))  # noqa: S311


def _fold(text: str) -> str:
    """ASCII lower-case of a name, for e-mail local parts."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


def _cpf_from_nine(nine: str) -> str:
    return nine + cpf_check_digits(nine)


def _derived_cpf(*parts: object) -> str:
    """A valid CPF derived from ``parts`` (never one repeated digit)."""
    salt = 0
    while True:
        nine = str(_digest_int(*parts, salt) % 1_000_000_000).zfill(9)
        if nine != nine[0] * 9:
            return _cpf_from_nine(nine)
        salt += 1


def _mobile(rng: random.Random, ddd: str) -> str:
    # Brazilian mobiles: DDD + 9 + 8 digits; the digit after the 9 is 6-9 in current ranges.
    return f"{ddd}9{rng.randint(6, 9)}{rng.randint(0, 9_999_999):07d}"


def _landline(rng: random.Random, ddd: str) -> str:
    # Fixed lines: DDD + 8 digits starting with 2-5.
    return f"{ddd}{rng.randint(2, 5)}{rng.randint(0, 9_999_999):07d}"


def _cep(rng: random.Random, low: int, high: int) -> str:
    return f"{rng.randint(low, high):05d}{rng.randint(0, 999):03d}"


def _money(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d}"


def _br_date(d: dt.date) -> str:
    return f"{d.day:02d}/{d.month:02d}/{d.year:04d}"


def _age(birth: dt.date) -> int:
    years = _TODAY.year - birth.year
    return years - ((_TODAY.month, _TODAY.day) < (birth.month, birth.day))


class PhoneEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A phone of a synthetic person (``number`` is DDD + number, digits only)."""

    number: str
    kind: str
    operator: str
    whatsapp: bool
    active: bool = True


class Address(msgspec.Struct, frozen=True, kw_only=True):
    """An address of a synthetic person."""

    street_type: str
    street: str
    number: str
    complement: str
    neighbourhood: str
    city: str
    uf: str
    cep: str


class Person(msgspec.Struct, frozen=True, kw_only=True):
    """A synthetic person: everything the sandbox serves about them derives from this.

    Attributes:
        cpf: 11 digits with valid check digits.
        index: Position in the seed's sequence, or None when generated from an arbitrary CPF.
        name: Upper-case full name (may contain accents, like real registries).
        sex: ``M`` or ``F``.
        mobile: Primary mobile phone, national digits (``11987654321``).
        email: Primary e-mail (lower case).
    """

    cpf: str
    index: int | None
    name: str
    first_name: str
    sex: Literal["M", "F"]
    birth_date: dt.date
    mother_name: str
    father_name: str | None
    uf: str
    city: str
    phones: tuple[PhoneEntry, ...]
    emails: tuple[str, ...]
    addresses: tuple[Address, ...]
    income_cents: int
    credit_score: int

    @property
    def mobile(self) -> str:
        """The primary mobile (national digits)."""
        return self.phones[0].number

    @property
    def mobile_e164(self) -> str:
        """The primary mobile as ``+55...`` (how C2S shows phones)."""
        return "+55" + self.phones[0].number

    @property
    def email(self) -> str:
        """The primary e-mail."""
        return self.emails[0]


class _Identity(msgspec.Struct, frozen=True):
    name: str
    first_name: str
    sex: Literal["M", "F"]
    birth_date: dt.date
    mother_name: str


def lead_id_for(seed: int, index: int) -> str:
    """The virtual C2S lead id of person ``index``: 32 hex, verifiable without storage.

    Layout: ``5a`` + the index in 14 hex digits + 16 hex digits of a keyed checksum.
    """
    check = _digest_int("lead", seed, index)
    return f"{_LEAD_MARKER}{index:014x}{check:016x}"


class LruBytes:
    """A small thread-safe LRU of encoded payloads (bounded memory for a long-running sandbox)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        """The cached value (now the most recent), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()

    def put(self, key: str, value: bytes) -> None:
        """Cache ``value``, evicting the least recently used beyond the capacity."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class SyntheticPeople:
    """The synthetic population of one seed.

    Args:
        seed: Any integer; the same seed always yields the same people.
        registry_size: How many of the seed's first people Diretrix can find by phone/e-mail.
        max_extra_contacts: Bound on contacts registered later (people handed out since).
        cache_size: Encoded dossiers kept in memory (LRU).
    """

    def __init__(
        self,
        seed: int,
        *,
        registry_size: int = 10_000,
        max_extra_contacts: int = 200_000,
        cache_size: int = 4096,
    ) -> None:
        self.seed = seed
        self.registry_size = registry_size
        self._max_extra = max_extra_contacts
        self._seed_contacts: dict[str, str] | None = None
        self._extra_contacts: OrderedDict[str, str] = OrderedDict()
        self._registry_lock = threading.Lock()
        self._dossiers = LruBytes(cache_size)
        self._ceps = LruBytes(max(64, cache_size // 8))

    # -- identity --------------------------------------------------------------------------

    def cpf_for(self, index: int) -> str:
        """The CPF of person ``index`` (valid check digits, deterministic)."""
        if index < 0:
            raise ValueError("person index must be >= 0")
        return _derived_cpf("cpf", self.seed, index)

    def person(self, index: int) -> Person:
        """Person ``index`` of this seed."""
        return self._build(self.cpf_for(index), index)

    def by_cpf(self, cpf: str) -> Person:
        """The person of any valid CPF (formatted or not).

        Raises:
            domain.errors.InvalidInput: If ``cpf`` is not a valid CPF.
        """
        return self._build(normalize_cpf(cpf), None)

    def _identity(self, cpf: str, rng: random.Random | None = None) -> _Identity:
        # The identity is the first thing drawn from the person's "core" stream, so a
        # neighbour's or resident's name matches what by_cpf() gives for their CPF.
        if rng is None:
            rng = _rng("core", self.seed, cpf)
        sex: Literal["M", "F"] = "F" if rng.random() < 0.5 else "M"
        female = sex == "F"
        first = rng.choice(_FEMALE_FIRST if female else _MALE_FIRST)
        middle = rng.choice(_FEMALE_MIDDLE if female else _MALE_MIDDLE)
        mother_last = rng.choice(_LAST)
        father_last = rng.choice(_LAST)
        parts = (
            [first, middle, mother_last, father_last]
            if middle
            else [first, mother_last, father_last]
        )
        mother = f"{rng.choice(_FEMALE_FIRST)} {rng.choice(_LAST)} {mother_last}"
        birth = dt.date.fromordinal(rng.randint(_FIRST_BIRTH, _LAST_BIRTH))
        return _Identity(" ".join(parts), first, sex, birth, mother)

    def _contacts(
        self, cpf: str, identity: _Identity, rng: random.Random
    ) -> tuple[str, str, str, tuple[PhoneEntry, ...], tuple[str, ...]]:
        uf, ddd, city, _low, _high = rng.choice(_PLACES)
        first = _fold(identity.first_name)
        last = _fold(identity.name.rsplit(" ", 1)[-1])
        phones = [
            PhoneEntry(
                number=_mobile(rng, ddd),
                kind="TELEFONE MÓVEL",
                operator=rng.choice(_OPERATORS),
                whatsapp=True,
            )
        ]
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                phones.append(
                    PhoneEntry(
                        number=_landline(rng, ddd),
                        kind=rng.choice(("TELEFONE RESIDENCIAL", "COMERCIAL")),
                        operator=rng.choice(_OPERATORS),
                        whatsapp=False,
                    )
                )
            else:
                phones.append(
                    PhoneEntry(
                        number=_mobile(rng, ddd),
                        kind="CELULAR",
                        operator=rng.choice(_OPERATORS),
                        whatsapp=rng.random() < 0.4,
                        active=rng.random() < 0.8,
                    )
                )
        # A suffix from the CPF keeps e-mails of namesakes apart without looking like a fake
        # lead (no 6-digit runs).
        suffix = cpf[-4:-1]
        emails = [f"{first}.{last}{suffix}@{rng.choice(_EMAIL_DOMAINS)}"]
        if rng.random() < 0.6:
            emails.append(f"{first[:1]}{last}.{cpf[2:5]}@{rng.choice(_EMAIL_DOMAINS)}")
        return uf, ddd, city, tuple(phones), tuple(emails)

    def _core(
        self, cpf: str
    ) -> tuple[_Identity, str, str, str, tuple[PhoneEntry, ...], tuple[str, ...]]:
        rng = _rng("core", self.seed, cpf)
        identity = self._identity(cpf, rng)
        return identity, *self._contacts(cpf, identity, rng)

    def _build(self, cpf: str, index: int | None) -> Person:
        identity, uf, ddd, city, phones, emails = self._core(cpf)
        rng = _rng("details", self.seed, cpf)
        place = next(p for p in _PLACES if p[0] == uf and p[1] == ddd)
        addresses = [self._address(rng, place)]
        for _ in range(rng.randint(0, 2)):
            addresses.append(
                self._address(rng, rng.choice(_PLACES) if rng.random() < 0.3 else place)
            )
        # Log-normal incomes: median ~ R$ 3,300, a long tail of high earners.
        income = min(max(math.exp(rng.gauss(8.1, 0.8)), 1100.0), 90_000.0)
        father = (
            None
            if rng.random() < 0.15
            else f"{rng.choice(_MALE_FIRST)} {identity.name.rsplit(' ', 1)[-1]}"
        )
        return Person(
            cpf=cpf,
            index=index,
            name=identity.name,
            first_name=identity.first_name,
            sex=identity.sex,
            birth_date=identity.birth_date,
            mother_name=identity.mother_name,
            father_name=father,
            uf=uf,
            city=city,
            phones=phones,
            emails=emails,
            addresses=tuple(addresses),
            income_cents=round(income * 100),
            credit_score=rng.randint(150, 990),
        )

    @staticmethod
    def _address(rng: random.Random, place: tuple[str, str, str, int, int]) -> Address:
        uf, _ddd, city, low, high = place
        return Address(
            street_type=rng.choice(_STREET_TYPES),
            street=rng.choice(_STREETS),
            number=str(rng.randint(1, 3500)),
            complement=rng.choice(_COMPLEMENTS),
            neighbourhood=rng.choice(_NEIGHBOURHOODS),
            city=city,
            uf=uf,
            cep=_cep(rng, low, high),
        )

    # -- reverse lookups (Diretrix) --------------------------------------------------------

    def _seed_registry(self) -> dict[str, str]:
        registry = self._seed_contacts
        if registry is None:
            with self._registry_lock:
                registry = self._seed_contacts
                if registry is None:
                    registry = {}
                    for i in range(self.registry_size):
                        cpf = self.cpf_for(i)
                        _ident, _uf, _ddd, _city, phones, emails = self._core(cpf)
                        for phone in phones:
                            registry.setdefault(phone.number, cpf)
                        for email in emails:
                            registry.setdefault(email, cpf)
                    self._seed_contacts = registry
        return registry

    def warm_up(self) -> None:
        """Build the seed's contact registry now (else on the first lookup)."""
        self._seed_registry()

    def register(self, person: Person) -> None:
        """Make ``person``'s phones and e-mails findable (bounded; oldest forgotten first)."""
        with self._registry_lock:
            for key in (*(p.number for p in person.phones), *person.emails):
                self._extra_contacts[key] = person.cpf
                self._extra_contacts.move_to_end(key)
            while len(self._extra_contacts) > self._max_extra:
                self._extra_contacts.popitem(last=False)

    def cpf_by_phone(self, phone: str) -> str | None:
        """The CPF owning this phone (any formatting, ``+55`` tolerated), if registered."""
        key = storage_digits(phone)
        return self._extra_contacts.get(key) or self._seed_registry().get(key)

    def cpf_by_email(self, email: str) -> str | None:
        """The CPF owning this e-mail (case-insensitive), if registered."""
        key = email.strip().lower()
        return self._extra_contacts.get(key) or self._seed_registry().get(key)

    def clear_registered(self) -> None:
        """Forget contacts registered after start-up (the seed's registry stays)."""
        with self._registry_lock:
            self._extra_contacts.clear()

    # -- virtual leads -----------------------------------------------------------------------

    def lead_id(self, index: int) -> str:
        """The virtual C2S lead of person ``index`` (served without being stored)."""
        return lead_id_for(self.seed, index)

    def index_for_lead(self, lead_id: str) -> int | None:
        """The person index of a virtual lead id, or None if ``lead_id`` is not one."""
        if len(lead_id) != _LEAD_ID_LENGTH or not lead_id.startswith(_LEAD_MARKER):
            return None
        try:
            index = int(lead_id[2:16], 16)
        except ValueError:
            return None
        return index if lead_id_for(self.seed, index) == lead_id.lower() else None

    # -- payloads ----------------------------------------------------------------------------

    def dossier(self, cpf: str) -> dict[str, Any]:
        """The Work API ``modulo=cpf`` payload of ``cpf`` as a dict (25 top-level keys)."""
        return self._dossier_dict(self.by_cpf(cpf))

    def dossier_json(self, cpf: str) -> bytes:
        """The encoded ``modulo=cpf`` payload (cached, LRU).

        Raises:
            domain.errors.InvalidInput: If ``cpf`` is not a valid CPF.
        """
        key = normalize_cpf(cpf)
        cached = self._dossiers.get(key)
        if cached is None:
            cached = msgspec.json.encode(self._dossier_dict(self._build(key, None)))
            self._dossiers.put(key, cached)
        return cached

    def diretrix_person(self, cpf: str) -> dict[str, Any]:
        """The Diretrix ``/Consultas/Pessoa/{cpf}`` object (the provider spells ``logadouro``)."""
        p = self.by_cpf(cpf)
        return {
            "nome": p.name,
            "cpf": p.cpf,
            "rg": self._rg(p)[0],
            "rgOrgaoEmissor": self._rg(p)[1],
            "dataNascimento": _br_date(p.birth_date),
            "idade": _age(p.birth_date),
            "signo": _sign(p.birth_date),
            "sexo": p.sex,
            "mae": p.mother_name,
            "telefones": [
                {
                    "numero": ph.number[2:],
                    "ddd": ph.number[:2],
                    "operadora": ph.operator,
                    "tipo": "CELULAR" if len(ph.number) == 11 else "FIXO",
                    "ranking": rank,
                }
                for rank, ph in enumerate(p.phones, start=1)
            ],
            "emails": [{"endereco": e, "ranking": rank} for rank, e in enumerate(p.emails, 1)],
            "enderecos": [
                {
                    "logadouro": a.street,
                    "numero": a.number,
                    "bairro": a.neighbourhood,
                    "cidade": a.city,
                    "uf": a.uf,
                    "cep": a.cep,
                    "complemento": a.complement,
                    "ranking": rank,
                    "logadouroTipo": a.street_type,
                }
                for rank, a in enumerate(p.addresses, start=1)
            ],
        }

    def cep_json(self, cep: str) -> bytes:
        """The Work API ``modulo=cep`` payload: a JSON array of the residents of ``cep``."""
        cached = self._ceps.get(cep)
        if cached is not None:
            return cached
        rng = _rng("cep", self.seed, cep)
        prefix = int(cep[:5])
        place = next((p for p in _PLACES if p[3] <= prefix <= p[4]), _PLACES[0])
        street = f"{rng.choice(_STREET_TYPES)} {rng.choice(_STREETS)}"
        neighbourhood = rng.choice(_NEIGHBOURHOODS)
        residents = []
        for k in range(rng.randint(2, 8)):
            cpf = _derived_cpf("resident", self.seed, cep, k)
            ident = self._identity(cpf)
            income = rng.randint(1200_00, 25_000_00)
            residents.append(
                {
                    "nome": ident.name,
                    "cpf_cnpj": cpf,
                    "dataNascimento": f"{ident.birth_date.isoformat()} 00:00:00",
                    "sexo": ident.sex,
                    "renda": _money(income),
                    "nomeMae": ident.mother_name,
                    "endereco": {
                        "logradouro": street,
                        "logradouroNumero": rng.randint(1, 3500),
                        "bairro": neighbourhood,
                        "cidade": place[2],
                        "cep": int(cep),
                    },
                    "emails": [],
                    "telefones": [],
                }
            )
        encoded = msgspec.json.encode(residents)
        self._ceps.put(cep, encoded)
        return encoded

    def _rg(self, p: Person) -> tuple[str, str]:
        n = _digest_int("rg", self.seed, p.cpf) % 100_000_000
        return f"{p.uf}-{n // 1_000_000:02d}.{n // 1000 % 1000:03d}.{n % 1000:03d}", f"SSP-{p.uf}"

    def _dossier_dict(self, p: Person) -> dict[str, Any]:
        rng = _rng("dossier", self.seed, p.cpf)
        birth = _br_date(p.birth_date)
        sexo = "M - MASCULINO" if p.sex == "M" else "F - FEMININO"
        cns = f"7{_digest_int('cns', self.seed, p.cpf) % 10**14:014d}"
        reais = p.income_cents // 100
        low, high, band_code, band_label = next(
            b for b in _INCOME_BANDS if b[1] is None or reais < b[1]
        )
        faixa = f"Acima de R$ {low}" if high is None else f"De R$ {low} até R$ {high}"
        risk = next(label for floor, label in _RISK_BANDS if p.credit_score >= floor)
        mosaic = rng.choice(_MOSAICS)
        mosaic_new = rng.choice(_MOSAICS)
        cbo, cbo_text = rng.choice(_OCCUPATIONS)
        rg_number, rg_issuer = self._rg(p)
        companies = []
        for k in range(rng.choice((0, 0, 0, 1, 1, 2))):
            twelve = f"{_digest_int('cnpj', self.seed, p.cpf, k) % 10**8:08d}0001"
            cnpj = twelve + cnpj_check_digits(twelve)
            since = dt.date.fromordinal(
                rng.randint(dt.date(2000, 1, 1).toordinal(), _TODAY.toordinal())
            )
            relation = rng.choice(("SOCIO-ADMINISTRADOR", "SOCIO", ""))
            companies.append(
                {
                    "cnpj": cnpj,
                    "tipoRelacao": "QSA" if relation else "REPRESENTANTELEGAL",
                    "relacao": relation,
                    "admissao": _br_date(since),
                    "demissao": "31/12/9999",
                }
            )
        relatives = [
            {
                "nomeParente": p.mother_name,
                "cpfParente": _derived_cpf("mother", self.seed, p.cpf),
                "grauParentesco": "MAE",
            }
        ]
        if p.father_name is not None:
            relatives.append(
                {
                    "nomeParente": p.father_name,
                    "cpfParente": _derived_cpf("father", self.seed, p.cpf),
                    "grauParentesco": "PAI",
                }
            )
        neighbours = []
        for k in range(rng.randint(1, 3)):
            ncpf = _derived_cpf("neighbour", self.seed, p.cpf, k)
            ident = self._identity(ncpf)
            neighbours.append(
                {
                    "nome": ident.name,
                    "cpf": ncpf,
                    "dataNascimento": _br_date(ident.birth_date),
                    "idade": _age(ident.birth_date),
                    "sexo": "M - MASCULINO" if ident.sex == "M" else "F - FEMININO",
                    "nomeMae": ident.mother_name,
                }
            )
        tax_year = rng.choice((2022, 2023, 2024))
        status_date = f"{rng.randint(2015, 2024)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        rg_date = f"{p.birth_date.year + 18}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        return {
            "status": 200,
            "foto": {"foto": None, "assinatura": None, "caracteristicas": []},
            "DadosBasicos": {
                "nome": p.name,
                "cpf": p.cpf,
                "cns": cns,
                "dataNascimento": birth,
                "sexo": sexo,
                "cor": rng.choice(_COLOURS),
                "nomeMae": p.mother_name,
                "nomePai": p.father_name if p.father_name is not None else "SEM INFORMAÇÃO",
                "municipioNascimento": p.city,
                "escolaridade": rng.choice(_SCHOOLING),
                "estadoCivil": rng.choice(_MARITAL),
                "nacionalidade": "BRASILEIRA",
                "conjuge": [],
                "obito": {"obito": "NÃO", "dataObito": "Não consta."},
                "situacaoCadastral": {
                    "codigoSituacaoCadastral": "2",
                    "descricaoSituacaoCadastral": "REGULAR",
                    "dataSituacaoCadastral": f"{status_date} 00:00:00",
                },
            },
            "DadosEconomicos": {
                "renda": _money(p.income_cents),
                "poderAquisitivo": {
                    "codigoPoderAquisitivo": band_code,
                    "poderAquisitivoDescricao": band_label,
                    "rendaPoderAquisitivo": _money(p.income_cents),
                    "codigoFaixaRenda": str(int(band_code) * 2),
                    "faixaPoderAquisitivo": faixa,
                },
                "score": {
                    "scoreCSB": str(max(0, p.credit_score - rng.randint(0, 120))),
                    "scoreCSBFaixaRisco": risk.split(" ", 1)[0],
                    "scoreCSBA": str(p.credit_score),
                    "scoreCSBAFaixaRisco": risk,
                },
                "serasaMosaic": {
                    "codigoMosaic": mosaic[0],
                    "descricaoMosaic": mosaic[1],
                    "classeMosaic": mosaic[2],
                    "codigoMosaicNovo": mosaic_new[0],
                    "descricaoMosaicNovo": mosaic_new[1],
                    "classeMosaicNovo": mosaic_new[2],
                    "codigoMosaicSecundario": mosaic[0],
                    "descricaoMosaicSecundario": mosaic[1],
                    "classeMosaicSecundario": mosaic[2],
                    "observação": "Para mais assertividade, levar em consideração o mosaic novo.",
                },
            },
            "profissao": {
                "cbo": cbo,
                "cboDescricao": cbo_text,
                "pis": 10_000_000_000 + _digest_int("pis", self.seed, p.cpf) % 89_999_999_999,
            },
            "empregos": [],
            "empresas": companies,
            "registroGeral": {
                "numero": rg_number,
                "orgaoEmissor": rg_issuer,
                "dataEmissao": rg_date,
            },
            "tituloEleitor": {
                "tituloEleitorNumero": 100_000_000_000
                + _digest_int("titulo", self.seed, p.cpf) % 899_999_999_999,
                "zonaTitulo": rng.randint(1, 420),
                "secaoTitulo": rng.randint(1, 900),
            },
            "enderecos": [
                {
                    "tipoLogradouro": a.street_type,
                    "logradouro": a.street,
                    "logradouroNumero": a.number,
                    "complemento": a.complement,
                    "bairro": a.neighbourhood,
                    "cidade": a.city,
                    "uf": a.uf,
                    "cep": a.cep,
                }
                for a in p.addresses
            ],
            "telefones": [
                {
                    "telefone": ph.number,
                    "status": "ATIVO" if ph.active else "NO",
                    "tipo": ph.kind,
                    "operadora": ph.operator,
                    "whatsapp": "SIM" if ph.whatsapp else None,
                }
                for ph in p.phones
            ],
            "emails": [
                {
                    "email": e,
                    "prioridade": ("MUITO ALTA", "ALTA", "MEDIA")[min(k, 2)],
                    "qualidade": "OTIMO" if k == 0 else "BOM",
                    "emailPessoal": "SIM",
                    "blacklist": "NÃO",
                }
                for k, e in enumerate(p.emails)
            ],
            "parentes": relatives,
            "DadosImposto": [
                {
                    "cpf": p.cpf,
                    "banco": "001",
                    "agencia": f"{rng.randint(1, 9999):04d}",
                    "lote": f"{rng.randint(0, 999_999):06d}",
                    "ano": str(tax_year),
                    "dataLote": f"{tax_year}-0{rng.randint(5, 9)}-15",
                    "status": rng.choice(
                        ("IMPOSTO A RESTITUIR", "RESTITUICAO PAGA", "IMPOSTO A PAGAR")
                    ),
                }
            ],
            "beneficios": [
                {
                    "tipo": tipo,
                    "beneficio": label,
                    "totalParcelasRecebidas": 0,
                    "totalRecebido": "R$ 0",
                    "parcelasRecebidas": [],
                }
                for tipo, label in (
                    ("auxilioEmergencial", "AUXILIO EMERGENCIAL"),
                    ("bolsaFamilia", "BOLSA FAMILIA"),
                    ("bpc", "BENEFICIO PRESTACAO CONTINUADA"),
                    ("inss", "INSTITUTO NACIONAL DO SEGURO SOCIAL"),
                )
            ],
            "listaDocumentos": {
                "CNS": {
                    "numeroCNS": cns,
                    "dataAtribuicao": f"{rng.randint(2005, 2020)}-03-10T10:00:00-03:00",
                    "tipoCartao": "D",
                    "manual": "false",
                    "justificativaManual": {},
                },
                "outros": None,
            },
            "imunoBiologicos": [],
            "pep": [],
            "vizinhos": neighbours,
            "internet": {
                "www.loja.example": {
                    "id": rng.randint(1_000_000, 9_999_999),
                    "telefone": p.mobile,
                    "email": p.email,
                }
            },
            "comprasId": [],
            "perfilConsumo": {
                **{flag: rng.random() < 0.5 for flag in _CONSUMER_FLAGS},
                **{
                    name: f"{rng.randint(5, 98)}% de probabilidade positiva."
                    for name in _CONSUMER_SCORES
                },
            },
            "servidor_siape": {
                "ID_Servidor": "",
                "Registros_Servidor": [],
                "Remuneracoes_Servidor": [],
                "Afastamentos_Servidor": [],
                "Observacoes_Servidor": [],
            },
            "flags": {
                "__pessoa_exposta_politicamente__": False,
                "__beneficiario_auxilios__": False,
                "__servidor_publico_siape__": False,
            },
            "debug_info": [],
        }


_SIGNS = (
    ((1, 20), "CAPRICORNIO"), ((2, 19), "AQUARIO"), ((3, 21), "PEIXES"), ((4, 20), "ARIES"),
    ((5, 21), "TOURO"), ((6, 21), "GEMEOS"), ((7, 23), "CANCER"), ((8, 23), "LEAO"),
    ((9, 23), "VIRGEM"), ((10, 23), "LIBRA"), ((11, 22), "ESCORPIAO"), ((12, 22), "SAGITARIO"),
)  # fmt: skip


def _sign(birth: dt.date) -> str:
    for (month, day), name in _SIGNS:
        if (birth.month, birth.day) < (month, day):
            return name
    return "CAPRICORNIO"
