"""Micro benchmarks of the domain's hot spots (pytest-benchmark).

Not part of the test suite (``testpaths = ["tests"]``): the runner calls them with
``pytest bench/micro`` and compares each median with the calibration loop's, measured in the
same process, so the ratio does not depend on the machine's speed. No assertion here is about
time; the assertions only check that each benchmark does the work it claims.

Inputs are the sandbox's synthetic dossier (a full, well-typed Work API ``modulo=cpf`` body of
about 5 KB) and one irregular variant that takes the tolerant decoding path, as real upstream
bodies sometimes do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from domain.documents import normalize_cpf
from domain.dossier import decode_dossier, normalize_dossier
from domain.message import PersonSource, format_lead_message
from domain.phones import parse_br_phone, storage_digits
from infra.sandbox.people import SyntheticPeople

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

_PEOPLE: Final = SyntheticPeople(20251122)
_CPF: Final = _PEOPLE.cpf_for(7)
DOSSIER: Final = _PEOPLE.dossier_json(_CPF)


def _irregular(raw: bytes) -> bytes:
    # A number where the contract has text: msgspec's typed path refuses it, the tolerant path
    # cleans it field by field (what decode_dossier does for odd upstream bodies).
    doc = msgspec.json.decode(raw)
    doc["DadosBasicos"]["cns"] = 772012870264816
    return msgspec.json.encode(doc)


IRREGULAR: Final = _irregular(DOSSIER)
FORMATTED_CPF: Final = f"{_CPF[:3]}.{_CPF[3:6]}.{_CPF[6:9]}-{_CPF[9:]}"
PHONE: Final = "(11) 98765-4321"
E164_PHONE: Final = "+55 11 98765-4321"


def calibration() -> int:
    """A fixed pure-Python workload: the unit the other benchmarks are expressed in."""
    total = 0
    for i in range(300):
        total += len(str(i * 7919))
    return total


def test_calibration(benchmark: BenchmarkFixture) -> None:
    assert benchmark(calibration) > 0


def test_dossier_decode(benchmark: BenchmarkFixture) -> None:
    dossier = benchmark(decode_dossier, DOSSIER)
    assert dossier.dados_basicos is not None
    assert dossier.dados_basicos.cpf == _CPF


def test_dossier_decode_tolerant(benchmark: BenchmarkFixture) -> None:
    dossier = benchmark(decode_dossier, IRREGULAR)
    assert dossier.dados_basicos is not None
    assert dossier.dados_basicos.cns == "772012870264816"


def test_dossier_normalize(benchmark: BenchmarkFixture) -> None:
    dossier = decode_dossier(DOSSIER)
    person = benchmark(normalize_dossier, dossier)
    assert person.cpf == _CPF


def test_message_format(benchmark: BenchmarkFixture) -> None:
    people = [PersonSource(cpf=_CPF, dossier=decode_dossier(DOSSIER), via="phone", contact=PHONE)]
    message = benchmark(format_lead_message, people, layout="process")
    assert message


def test_cpf_normalize(benchmark: BenchmarkFixture) -> None:
    # The computation, not the memo in front of it (a repeated CPF is a dictionary hit).
    assert benchmark(normalize_cpf.__wrapped__, FORMATTED_CPF) == _CPF


def test_phone_parse(benchmark: BenchmarkFixture) -> None:
    # The computation, not the memo in front of it.
    assert benchmark(parse_br_phone.__wrapped__, PHONE).national == "11987654321"


def test_phone_storage_digits(benchmark: BenchmarkFixture) -> None:
    # The parse inside is memoised: this is the digit handling plus a memo hit, as in service.
    assert benchmark(storage_digits, E164_PHONE) == "11987654321"
