"""Hypothesis strategies and synthetic data for the domain tests.

Everything here is invented: names, addresses and numbers belong to nobody; CPFs and CNPJs are
generated with correct check digits so they exercise the validating code paths.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from domain.documents import cnpj_check_digits, cpf_check_digits
from domain.dossier import Dossier, decode_dossier

__all__ = [
    "BR_DDDS",
    "DOSSIER_WIRE_NAMES",
    "dossier_payloads",
    "dossiers",
    "json_objects",
    "json_values",
    "landline_nationals",
    "mobile_nationals",
    "valid_cnpjs",
    "valid_cpfs",
]

# Every area code in use in Brazil (ANATEL); the other numbers in 11-99 are not assigned.
BR_DDDS: tuple[str, ...] = (
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28",
    "31", "32", "33", "34", "35", "37", "38", "41", "42", "43", "44", "45", "46", "47",
    "48", "49", "51", "53", "54", "55", "61", "62", "63", "64", "65", "66", "67", "68",
    "69", "71", "73", "74", "75", "77", "79", "81", "82", "83", "84", "85", "86", "87",
    "88", "89", "91", "92", "93", "94", "95", "96", "97", "98", "99",
)  # fmt: skip

_DIGITS = "0123456789"


def _digit_strings(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_DIGITS, min_size=size, max_size=size)


def valid_cpfs() -> st.SearchStrategy[str]:
    """11-digit CPFs with correct check digits, never a single repeated digit."""
    return (
        _digit_strings(9)
        .map(lambda nine: nine + cpf_check_digits(nine))
        .filter(lambda cpf: len(set(cpf)) > 1)
    )


def valid_cnpjs() -> st.SearchStrategy[str]:
    """14-digit CNPJs with correct check digits, never a single repeated digit."""
    return (
        _digit_strings(12)
        .map(lambda twelve: twelve + cnpj_check_digits(twelve))
        .filter(lambda cnpj: len(set(cnpj)) > 1)
    )


def mobile_nationals() -> st.SearchStrategy[str]:
    """National mobile numbers: DDD + 9 + [1-9] + 7 digits."""
    return st.builds(
        lambda ddd, second, rest: f"{ddd}9{second}{rest}",
        st.sampled_from(BR_DDDS),
        st.sampled_from("123456789"),
        _digit_strings(7),
    )


def landline_nationals() -> st.SearchStrategy[str]:
    """National landline numbers: DDD + [2-5] + 7 digits."""
    return st.builds(
        lambda ddd, first, rest: f"{ddd}{first}{rest}",
        st.sampled_from(BR_DDDS),
        st.sampled_from("2345"),
        _digit_strings(7),
    )


# ---------------------------------------------------------------------------------------------
# Generic JSON
# ---------------------------------------------------------------------------------------------


def _wire_names(info: mi.Type, into: set[str]) -> set[str]:
    if isinstance(info, mi.StructType):
        for field in info.fields:
            into.add(field.encode_name)
            _wire_names(field.type, into)
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            _wire_names(member, into)
    elif isinstance(info, mi.VarTupleType | mi.ListType):
        _wire_names(info.item_type, into)
    return into


DOSSIER_WIRE_NAMES: tuple[str, ...] = tuple(sorted(_wire_names(mi.type_info(Dossier), set())))

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
# Keys are often ones the model knows, so random values land in real fields at every depth.
_json_keys = st.one_of(st.sampled_from(DOSSIER_WIRE_NAMES), st.text(max_size=8))


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value (``Any``: the point is arbitrary shapes)."""
    return st.recursive(
        _json_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(_json_keys, children, max_size=5),
        ),
        max_leaves=25,
    )


def json_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Any JSON object, with keys biased towards the dossier's wire names."""
    return st.dictionaries(_json_keys, json_values(), max_size=8)


# ---------------------------------------------------------------------------------------------
# Realistic-shaped dossiers with holes and odd values
# ---------------------------------------------------------------------------------------------

_odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.just(""),
    st.just([]),
    st.just({}),
    st.lists(st.integers(), max_size=2),
)


def _maybe_odd(realistic: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the realistic value, sometimes anything else."""
    return st.one_of(realistic, realistic, realistic, _odd_values)


def _section(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object where each known key may be missing or odd, plus stray keys."""
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional={k: _maybe_odd(v) for k, v in fields.items()}),
        st.dictionaries(st.text(max_size=6), _json_scalars, max_size=2),
    )


def _list_of(item: st.SearchStrategy[Any], max_size: int) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(item, item, item, _odd_values), max_size=max_size)


_upper_names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZÁÉÍÓÚÂÊÔÃÕÇ ", min_size=1, max_size=30)
_any_text = st.text(max_size=30)
_dates = st.one_of(
    st.builds(
        lambda d, m, y: f"{d:02d}/{m:02d}/{y:04d}",
        st.integers(0, 35),
        st.integers(0, 14),
        st.integers(1, 9999),
    ),
    _any_text,
)
_amounts = st.one_of(
    st.builds(lambda i, c: f"{i},{c:02d}", st.integers(0, 10**7), st.integers(0, 99)),
    st.builds(lambda i: str(i), st.integers(-(10**6), 10**9)),
    st.sampled_from(["", "abc", "1.234,56", "NaN", "inf", "1e5", "12,3,4", " 10,5 "]),
    _any_text,
)
_bands = st.one_of(
    st.builds(
        lambda lo, hi: f"De R$ {lo} até R$ {hi}",
        st.integers(0, 10**6),
        st.integers(0, 10**7),
    ),
    st.sampled_from(["Acima de R$ 20000", "R$ 7018,50", "R$", "R$ 12 R$ 13"]),
    _any_text,
)
_risks = st.sampled_from(
    ["BAIXISSIMO RISCO", "BAIXO RISCO", "MEDIO RISCO", "ALTO RISCO", "ALTISSIMO RISCO", "???"]
)
_phone_numbers = st.one_of(mobile_nationals(), landline_nationals(), st.text(_DIGITS, max_size=14))
_emails = st.one_of(
    st.emails().map(str),
    st.sampled_from(["FULANO@Example.com", " x@y.com ", "bad", "a@b"]),
    _any_text,
)
_states = st.one_of(st.sampled_from(["SP", "rj", "MG", "XX", "", "São Paulo"]), _any_text)


def dossier_payloads() -> st.SearchStrategy[dict[str, Any]]:
    """Work API ``modulo=cpf``-shaped JSON objects with random holes and wrongly typed values."""
    basicos = _section(
        {
            "nome": _upper_names,
            "cpf": st.one_of(valid_cpfs(), st.text(_DIGITS, max_size=14)),
            "dataNascimento": _dates,
            "sexo": st.sampled_from(["M - MASCULINO", "F - FEMININO", "", "X", "masculino"]),
            "nomeMae": _upper_names,
            "nomePai": st.one_of(_upper_names, st.just("SEM INFORMAÇÃO")),
            "estadoCivil": st.sampled_from(["CASADO(A)", "SOLTEIRO(A)", "DIVORCIADO(A)"]),
        }
    )
    economicos = _section(
        {
            "renda": _amounts,
            "poderAquisitivo": _section(
                {
                    "poderAquisitivoDescricao": st.sampled_from(["ALTO", "MEDIO", "BAIXO"]),
                    "faixaPoderAquisitivo": _bands,
                    "rendaPoderAquisitivo": _amounts,
                }
            ),
            "score": _section(
                {
                    "scoreCSB": st.integers(0, 1000).map(str),
                    "scoreCSBA": st.one_of(st.integers(0, 1000).map(str), st.integers(0, 1000)),
                    "scoreCSBAFaixaRisco": _risks,
                }
            ),
        }
    )
    telefone = _section(
        {
            "telefone": st.one_of(_phone_numbers, st.integers(0, 10**12)),
            "status": st.sampled_from(["ATIVO", "NO"]),
            "tipo": st.sampled_from(["CELULAR", "TELEFONE RESIDENCIAL", "TELEFONE MÓVEL"]),
            "operadora": st.sampled_from(["VIVO", "TIM", "CLARO", "OI"]),
            "whatsapp": st.sampled_from(["SIM", "NAO"]),
        }
    )
    email = _section(
        {
            "email": _emails,
            "prioridade": st.sampled_from(["MUITO ALTA", "ALTA", "MEDIA", "BAIXA"]),
            "qualidade": st.sampled_from(["OTIMO", "BOM", "RUIM"]),
            "emailPessoal": st.sampled_from(["SIM", "NAO"]),
            "blacklist": st.sampled_from(["NÃO", "SIM"]),
        }
    )
    endereco = _section(
        {
            "tipoLogradouro": st.sampled_from(["R", "AV", "AL"]),
            "logradouro": _upper_names,
            "logradouroNumero": st.one_of(st.integers(0, 99999).map(str), st.integers(0, 9999)),
            "complemento": _any_text,
            "bairro": _upper_names,
            "cidade": _upper_names,
            "uf": _states,
            "cep": st.one_of(st.text(_DIGITS, min_size=8, max_size=8), st.integers(0, 10**8)),
        }
    )
    empresa = _section(
        {
            "cnpj": st.one_of(valid_cnpjs(), _any_text),
            "tipoRelacao": st.sampled_from(["QSA", "REPRESENTANTELEGAL"]),
            "relacao": st.sampled_from(["SOCIO-ADMINISTRADOR", "", "SOCIO"]),
            "admissao": _dates,
            "demissao": st.one_of(st.just("31/12/9999"), _dates),
        }
    )
    parente = _section(
        {
            "nomeParente": _upper_names,
            "cpfParente": valid_cpfs(),
            "grauParentesco": st.sampled_from(["MAE", "PAI", "IRMAO"]),
        }
    )
    return _section(
        {
            "status": st.sampled_from([200, 403, "200"]),
            "DadosBasicos": basicos,
            "DadosEconomicos": economicos,
            "profissao": _section({"cboDescricao": _any_text, "pis": st.integers(0, 10**11)}),
            "registroGeral": _section({"numero": _any_text}),
            "telefones": _list_of(telefone, 5),
            "emails": _list_of(email, 5),
            "enderecos": _list_of(endereco, 4),
            "empresas": _list_of(empresa, 4),
            "parentes": _list_of(parente, 3),
            "flags": _section({"__pessoa_exposta_politicamente__": st.booleans()}),
        }
    )


def dossiers() -> st.SearchStrategy[Dossier]:
    """Decoded dossiers built from :func:`dossier_payloads`."""
    return dossier_payloads().map(lambda payload: decode_dossier(msgspec.json.encode(payload)))
