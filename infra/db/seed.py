"""Synthetic parties for benchmarks and local development (never real data).

``seed(url, parties)`` loads ``parties`` people with valid CPF check digits, Brazilian-looking
invented names, 1-3 lower-case e-mails and 1-3 phones with real DDDs each, and a small current
enrichment for about half of them. Everything derives from ``seed``: the same arguments give the
same rows (ids included), so a second run with the same seed into the same database fails on
the primary keys and changes nothing.

Rows go in with COPY (``copy_records_to_table``) in batches. For large loads the secondary
indexes, unique and foreign-key constraints of the loaded tables are dropped first and rebuilt
from their own catalog definitions afterwards, all inside ONE transaction: an interrupted seed
leaves the database exactly as it was, and the definitions cannot drift from the migrations.
Rebuilding once is several times faster than maintaining a trigram GIN index and three indexes
on the contacts row by row. The transaction holds ACCESS EXCLUSIVE locks on the party tables:
seed a database that is not serving traffic.

Run: ``python -m infra.db.seed --url postgresql://... --parties 1000000``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time
import unicodedata
import uuid
from typing import TYPE_CHECKING, Final

import asyncpg
import msgspec

from domain.documents import cpf_check_digits
from domain.dossier import RISK_QUALITY, NormalizedEmail, NormalizedPerson, NormalizedPhone

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "REBUILD_THRESHOLD",
    "PartyGenerator",
    "SeedBatch",
    "SeedReport",
    "cpf_for",
    "main",
    "seed",
]

# Below this many parties, loading straight into the indexed tables is as fast as rebuilding.
REBUILD_THRESHOLD: Final = 100_000
_LOADED_TABLES: Final = (
    "core.parties",
    "core.people",
    "core.party_contacts",
    "core.party_enrichments",
)

_MALE: Final = (
    "JOSÉ", "JOÃO", "ANTÔNIO", "FRANCISCO", "CARLOS", "PAULO", "PEDRO", "LUCAS", "LUIZ",
    "MARCOS", "LUÍS", "GABRIEL", "RAFAEL", "DANIEL", "MARCELO", "BRUNO", "EDUARDO", "FELIPE",
    "RAIMUNDO", "RODRIGO", "MANOEL", "MATEUS", "ANDRÉ", "FERNANDO", "FÁBIO", "LEONARDO",
    "GUSTAVO", "GUILHERME", "LEANDRO", "TIAGO", "ANDERSON", "RICARDO", "MÁRCIO", "JORGE",
    "SEBASTIÃO", "ALEXANDRE", "ROBERTO", "EDSON", "DIEGO", "VITOR", "SÉRGIO", "CLÁUDIO",
    "JOAQUIM", "VINÍCIUS", "IGOR", "OTÁVIO", "HEITOR", "CAIO", "RENATO", "HUGO",
)  # fmt: skip
_FEMALE: Final = (
    "MARIA", "ANA", "FRANCISCA", "ANTÔNIA", "ADRIANA", "JULIANA", "MÁRCIA", "FERNANDA",
    "PATRÍCIA", "ALINE", "SANDRA", "CAMILA", "AMANDA", "BRUNA", "JÉSSICA", "LETÍCIA",
    "JÚLIA", "LUCIANA", "VANESSA", "MARIANA", "GABRIELA", "VERA", "VITÓRIA", "LARISSA",
    "CLÁUDIA", "BEATRIZ", "LUANA", "RITA", "SÔNIA", "RENATA", "ELIANE", "JOSEFA", "SIMONE",
    "NATÁLIA", "RAFAELA", "DÉBORA", "CRISTINA", "CAROLINA", "TERESA", "ISABEL", "CONCEIÇÃO",
    "HELENA", "LÚCIA", "ROSÂNGELA", "TATIANE", "KÁTIA", "REGINA", "VALÉRIA", "SARA", "LÍVIA",
)  # fmt: skip
_SURNAMES: Final = (
    "SILVA", "SANTOS", "OLIVEIRA", "SOUZA", "RODRIGUES", "FERREIRA", "ALVES", "PEREIRA",
    "LIMA", "GOMES", "COSTA", "RIBEIRO", "MARTINS", "CARVALHO", "ALMEIDA", "LOPES", "SOARES",
    "FERNANDES", "VIEIRA", "BARBOSA", "ROCHA", "DIAS", "NASCIMENTO", "ANDRADE", "MOREIRA",
    "NUNES", "MARQUES", "MACHADO", "MENDES", "FREITAS", "CARDOSO", "RAMOS", "GONÇALVES",
    "SANTANA", "TEIXEIRA", "ARAÚJO", "CAVALCANTI", "MONTEIRO", "MOURA", "CORREIA", "PINTO",
    "BATISTA", "CAMPOS", "XAVIER", "MEDEIROS", "BEZERRA", "BRANDÃO", "CASTRO", "FARIAS",
    "GUIMARÃES", "QUEIROZ", "AZEVEDO", "COELHO", "PIRES", "SIQUEIRA", "BRAGA", "FONSECA",
    "TAVARES", "SAMPAIO", "ASSUNÇÃO",
)  # fmt: skip
_PARTICLES: Final = ("DA", "DE", "DOS", "DAS", "DO")
_EMAIL_DOMAINS: Final = (
    "gmail.com", "hotmail.com", "outlook.com", "yahoo.com.br", "uol.com.br", "bol.com.br",
    "terra.com.br", "icloud.com", "live.com", "globo.com",
)  # fmt: skip
# Every Brazilian area code (DDD) in use.
_DDDS: Final = (
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28",
    "31", "32", "33", "34", "35", "37", "38", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "51", "53", "54", "55", "61", "62", "63", "64", "65", "66", "67", "68", "69", "71",
    "73", "74", "75", "77", "79", "81", "82", "83", "84", "85", "86", "87", "88", "89", "91",
    "92", "93", "94", "95", "96", "97", "98", "99",
)  # fmt: skip
_MARITAL: Final = ("SOLTEIRO(A)", "CASADO(A)", "DIVORCIADO(A)", "VIÚVO(A)", "UNIÃO ESTÁVEL")
_RISK_BANDS: Final = tuple(RISK_QUALITY)
_OPERATORS: Final = ("VIVO", "TIM", "CLARO", "OI")
# Multiplier walking the 10**9 CPF prefixes as a permutation: coprime with 10**9 (a power of 3),
# so the first 10**9 parties of one seed never share a CPF while still looking random.
_CPF_STEP: Final = 387_420_489
_CPF_SPACE: Final = 10**9
_EPOCH: Final = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_SPAN_SECONDS: Final = 700 * 24 * 3600
_BIRTH_FIRST: Final = dt.date(1940, 1, 1).toordinal()
_BIRTH_LAST: Final = dt.date(2006, 12, 31).toordinal()
_RAW_PAYLOAD: Final = '{"source": "seed"}'

_PARTY_COLUMNS: Final = (
    "id", "party_type", "cpf_cnpj", "full_name", "normalized_name", "sex", "birth_date",
    "mother_name", "enriched", "created_at", "updated_at",
)  # fmt: skip
_PEOPLE_COLUMNS: Final = (
    "party_id", "full_name", "mothers_name", "birth_date", "sex", "marital_status",
    "document_cpf", "created_at", "updated_at",
)  # fmt: skip
_CONTACT_COLUMNS: Final = (
    "contact_id", "party_id", "contact_type", "value", "is_primary", "is_verified",
    "is_whatsapp", "source", "valid_from", "created_at", "updated_at",
)  # fmt: skip
_ENRICHMENT_COLUMNS: Final = (
    "enrichment_id", "party_id", "provider", "raw_payload", "normalized_data",
    "quality_score", "enriched_at", "created_at", "updated_at",
)  # fmt: skip

_CONSTRAINTS_SQL: Final = """
SELECT c.conrelid::regclass::text AS table_name, c.conname::text, c.contype::text,
       pg_get_constraintdef(c.oid) AS definition
  FROM pg_constraint AS c
 WHERE (c.contype IN ('p', 'u') AND c.conrelid = ANY($1::regclass[]))
    OR (c.contype = 'f' AND (c.conrelid = ANY($1::regclass[]) OR c.confrelid = ANY($1::regclass[])))
 ORDER BY c.contype, c.conname
"""
_INDEXES_SQL: Final = """
SELECT i.indexrelid::regclass::text AS index_name, pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index AS i
 WHERE i.indrelid = ANY($1::regclass[])
   AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c
                    WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
 ORDER BY 1
"""


class SeedReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one :func:`seed` call loaded.

    Attributes:
        parties: Parties (all persons) inserted.
        people: ``core.people`` rows inserted (one per party).
        contacts: E-mails and phones inserted.
        enrichments: Current enrichments inserted (about half of the parties).
        seconds: Wall time, including index rebuilds and ANALYZE.
        rebuilt_indexes: Whether indexes and constraints were dropped and rebuilt.
    """

    parties: int
    people: int
    contacts: int
    enrichments: int
    seconds: float
    rebuilt_indexes: bool


class SeedBatch(msgspec.Struct, kw_only=True):
    """Rows for COPY, one tuple per row in the column order of the ``_*_COLUMNS`` tuples."""

    parties: list[tuple[object, ...]] = msgspec.field(default_factory=list)
    people: list[tuple[object, ...]] = msgspec.field(default_factory=list)
    contacts: list[tuple[object, ...]] = msgspec.field(default_factory=list)
    enrichments: list[tuple[object, ...]] = msgspec.field(default_factory=list)


def _ascii_lower(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _letters(number: int) -> str:
    """Bijective base-26 in letters: distinct numbers give distinct, digit-free strings.

    Digit-free matters: the e-mail validator rejects digit runs such as ``111111``.
    """
    out: list[str] = []
    n = number + 1
    while n:
        n, rem = divmod(n - 1, 26)
        out.append(chr(ord("a") + rem))
    return "".join(reversed(out))


def cpf_for(seed_value: int, index: int) -> str:
    """The CPF of party ``index`` of a seed: valid check digits, unique within the seed.

    Args:
        seed_value: The seed.
        index: The party's position (0-based).

    Returns:
        11 digits.
    """
    return _cpf(_cpf_offset(seed_value), index)


def _cpf_offset(seed_value: int) -> int:
    return random.Random(seed_value).randrange(_CPF_SPACE)  # noqa: S311 - synthetic data


def _cpf(offset: int, index: int) -> str:
    base = f"{(offset + index * _CPF_STEP) % _CPF_SPACE:09d}"
    if base == base[0] * 9:  # 111111111 would give an all-equal, invalid CPF
        base = base[:8] + str((int(base[8]) + 1) % 10)
    return base + cpf_check_digits(base)


class PartyGenerator:
    """Deterministic stream of synthetic parties: the same seed yields the same rows.

    Args:
        seed_value: The seed.
    """

    def __init__(self, seed_value: int) -> None:
        self._rng = random.Random(seed_value)  # noqa: S311 - synthetic data, not security
        self._offset = _cpf_offset(seed_value)
        self._encoder = msgspec.json.Encoder()

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def _name(self, female: bool) -> tuple[str, str, str]:
        rng = self._rng
        first = rng.choice(_FEMALE if female else _MALE)
        parts = [first]
        if rng.random() < 0.4:
            parts.append(rng.choice(_FEMALE if female else _MALE))
        if rng.random() < 0.3:
            parts.append(rng.choice(_PARTICLES))
        parts.append(rng.choice(_SURNAMES))
        last = rng.choice(_SURNAMES)
        parts.append(last)
        return " ".join(parts), first, last

    def _phone(self) -> tuple[str, bool]:
        rng = self._rng
        ddd = rng.choice(_DDDS)
        if rng.random() < 0.75:  # mobile: 9 + 8 digits
            number = f"{ddd}9{rng.randint(6, 9)}{rng.randrange(10_000_000):07d}"
            return number, True
        number = f"{ddd}{rng.randint(2, 5)}{rng.randrange(10_000_000):07d}"
        return number, False

    def batch(self, start: int, count: int) -> SeedBatch:
        """Generate parties ``start .. start + count - 1`` (call in order: the stream is shared).

        Args:
            start: Index of the first party (decides its CPF and e-mail suffix).
            count: How many parties.

        Returns:
            The rows of every loaded table for these parties.
        """
        rng = self._rng
        out = SeedBatch()
        for index in range(start, start + count):
            party_id = self._uuid()
            female = rng.random() < 0.5
            full_name, first, last = self._name(female)
            # A few records lack the sex, as real ones do; it stays NULL.
            sex = None if rng.random() < 0.03 else ("F" if female else "M")
            cpf = _cpf(self._offset, index)
            birth = dt.date.fromordinal(rng.randint(_BIRTH_FIRST, _BIRTH_LAST))
            mother = f"{rng.choice(_FEMALE)} {rng.choice(_SURNAMES)} {last}"
            created = _EPOCH + dt.timedelta(seconds=rng.randrange(_SPAN_SECONDS))
            updated = created + dt.timedelta(seconds=rng.randrange(30 * 24 * 3600))
            enriched = rng.random() < 0.5
            out.parties.append(
                (party_id, "person", cpf, full_name, full_name, sex, birth, mother, enriched,
                 created, updated)
            )  # fmt: skip
            out.people.append(
                (party_id, full_name, mother, birth, sex, rng.choice(_MARITAL), cpf, created,
                 updated)
            )  # fmt: skip
            local = f"{_ascii_lower(first)}.{_ascii_lower(last)}.{_letters(index)}"
            emails: list[NormalizedEmail] = []
            for n in range(rng.randint(1, 3)):
                address = f"{local}{n or ''}@{rng.choice(_EMAIL_DOMAINS)}"
                emails.append(NormalizedEmail(address=address))
                out.contacts.append(
                    (self._uuid(), party_id, "email", address, n == 0, rng.random() < 0.6,
                     False, "seed", created, created, created)
                )  # fmt: skip
            phones: list[NormalizedPhone] = []
            for n in range(rng.randint(1, 3)):
                number, mobile = self._phone()
                whatsapp = mobile and rng.random() < 0.6
                phones.append(
                    NormalizedPhone(
                        number=number, is_whatsapp=whatsapp, operator=rng.choice(_OPERATORS)
                    )
                )
                out.contacts.append(
                    (self._uuid(), party_id, "whatsapp" if whatsapp else "phone", number,
                     n == 0, True, whatsapp, "seed", created, created, created)
                )  # fmt: skip
            if enriched:
                band = rng.choice(_RISK_BANDS)
                person = NormalizedPerson(
                    cpf=cpf,
                    name=full_name,
                    normalized_name=full_name,
                    birth_date=birth,
                    sex=sex,  # type: ignore[arg-type]  # "M" / "F" / None by construction
                    mother_name=mother,
                    emails=tuple(emails),
                    phones=tuple(phones),
                    risk_band=band,
                    quality_score=RISK_QUALITY[band],
                )
                out.enrichments.append(
                    (self._uuid(), party_id, "seed", _RAW_PAYLOAD,
                     self._encoder.encode(person).decode(), RISK_QUALITY[band], updated,
                     updated, updated)
                )  # fmt: skip
        return out


async def _drop_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop FK/PK/unique constraints and plain indexes of the loaded tables.

    Returns:
        The statements that recreate them, in a valid order (indexes, keys, foreign keys).
    """
    tables = list(_LOADED_TABLES)
    constraints = await conn.fetch(_CONSTRAINTS_SQL, tables)
    indexes = await conn.fetch(_INDEXES_SQL, tables)
    foreign = [c for c in constraints if c["contype"] == "f"]
    keys = [c for c in constraints if c["contype"] != "f"]
    for c in foreign + keys:
        await conn.execute(f'ALTER TABLE {c["table_name"]} DROP CONSTRAINT "{c["conname"]}"')
    for i in indexes:
        await conn.execute(f"DROP INDEX {i['index_name']}")
    recreate = [str(i["definition"]) for i in indexes]
    recreate += [
        f'ALTER TABLE {c["table_name"]} ADD CONSTRAINT "{c["conname"]}" {c["definition"]}'
        for c in keys + foreign
    ]
    return recreate


async def _copy(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], rows: list[tuple[object, ...]]
) -> None:
    if rows:
        await conn.copy_records_to_table(
            table, schema_name="core", columns=list(columns), records=rows
        )


async def seed(
    database_url: str,
    parties: int,
    *,
    seed: int = 1,
    batch: int = 50_000,
    rebuild_indexes: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Load ``parties`` synthetic people into a migrated database.

    Args:
        database_url: The target database (already migrated).
        parties: How many parties to create.
        seed: Makes the data deterministic; use another seed to add more parties later.
        batch: Parties generated and copied per round.
        rebuild_indexes: Drop and rebuild indexes around the load; default: only from
            100,000 parties up.
        progress: Called with one line per batch and per phase; default prints to stderr.

    Returns:
        Counts and timing.

    Raises:
        asyncpg.UniqueViolationError: The same seed was already loaded (nothing is changed).
    """
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    rebuild = parties >= REBUILD_THRESHOLD if rebuild_indexes is None else rebuild_indexes
    generator = PartyGenerator(seed)
    counts = {"people": 0, "contacts": 0, "enrichments": 0}
    started = time.perf_counter()
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # Session-local tuning of a bulk load; durability is still guaranteed at COMMIT
            # for anything that reads it afterwards (only this transaction's flush is async).
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            await conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
            recreate = await _drop_indexes(conn) if rebuild else []
            done = 0
            while done < parties:
                size = min(batch, parties - done)
                rows = generator.batch(done, size)
                await _copy(conn, "parties", _PARTY_COLUMNS, rows.parties)
                await _copy(conn, "people", _PEOPLE_COLUMNS, rows.people)
                await _copy(conn, "party_contacts", _CONTACT_COLUMNS, rows.contacts)
                await _copy(conn, "party_enrichments", _ENRICHMENT_COLUMNS, rows.enrichments)
                counts["people"] += len(rows.people)
                counts["contacts"] += len(rows.contacts)
                counts["enrichments"] += len(rows.enrichments)
                done += size
                elapsed = time.perf_counter() - started
                say(
                    f"seed: {done:,}/{parties:,} parties, {counts['contacts']:,} contacts, "
                    f"{elapsed:.1f}s ({done / elapsed:,.0f} parties/s)"
                )
            for statement in recreate:
                phase = time.perf_counter()
                await conn.execute(statement)
                say(f"seed: rebuilt in {time.perf_counter() - phase:.1f}s: {statement[:90]}")
        for table in _LOADED_TABLES:
            await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    say(f"seed: {parties:,} parties loaded in {seconds:.1f}s")
    return SeedReport(
        parties=parties,
        people=counts["people"],
        contacts=counts["contacts"],
        enrichments=counts["enrichments"],
        seconds=seconds,
        rebuilt_indexes=rebuild,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m infra.db.seed --url URL --parties N [--seed S]``."""
    parser = argparse.ArgumentParser(description="Load synthetic parties (never real data).")
    parser.add_argument("--url", required=True, help="migrated target database")
    parser.add_argument("--parties", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args(argv)
    report = asyncio.run(seed(args.url, args.parties, seed=args.seed, batch=args.batch))
    print(msgspec.json.encode(report).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
