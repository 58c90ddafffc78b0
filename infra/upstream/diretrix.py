"""Diretrix client (phone/e-mail -> CPF): implements :class:`domain.ports.DiretrixPort`.

Wire format: HTTP Basic; ``GET /Consultas/Pessoa/Telefone/{phone}`` and
``GET /Consultas/Pessoa/Email/{email}`` answer a JSON array of ``{"nome", "cpf"}`` (``[]`` when
unknown); ``GET /Consultas/Pessoa/{cpf}`` answers the person. Lookups are reads: retried.
A 404 is read as "unknown", not as an error. Path segments are percent-encoded (an e-mail is
never put raw in the path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import msgspec

from domain.documents import CPF_LENGTH, only_digits
from domain.errors import NotFound
from domain.models import CpfCandidate
from infra.upstream.http import (
    DEFAULT_RETRY,
    RetryPolicy,
    UpstreamTransport,
    client_timeout,
    decode_json,
)

if TYPE_CHECKING:
    from infra.breaker.circuit import CircuitBreaker

__all__ = [
    "DiretrixAddress",
    "DiretrixClient",
    "DiretrixConfig",
    "DiretrixEmail",
    "DiretrixPerson",
    "DiretrixPhone",
]

_NAME = "diretrix"
_NOT_FOUND = 404

IdLike = str | int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DiretrixConfig:
    """How to reach Diretrix (the app maps ``Settings.diretrix_*`` onto this).

    Attributes:
        base_url: e.g. ``http://api.diretrixconsultoria.com.br``.
        user: Basic-auth user.
        password: Basic-auth password (hidden from ``repr``).
        timeout_s: Whole-call bound per attempt (every call is bounded).
        connect_timeout_s: Socket connect bound.
        retry: Retry policy of the lookups.
    """

    base_url: str
    user: str
    password: str = field(repr=False)
    timeout_s: float = 8.0
    connect_timeout_s: float = 2.0
    retry: RetryPolicy = DEFAULT_RETRY


class _Candidate(msgspec.Struct, frozen=True):
    nome: str | None = None
    cpf: IdLike = None


class DiretrixPhone(msgspec.Struct, frozen=True):
    """One of a Diretrix person's ``telefones``."""

    numero: IdLike = None
    ddd: IdLike = None
    operadora: str | None = None
    tipo: str | None = None
    ranking: int | None = None


class DiretrixEmail(msgspec.Struct, frozen=True):
    """One of a Diretrix person's ``emails``."""

    endereco: str | None = None
    ranking: int | None = None


class DiretrixAddress(msgspec.Struct, frozen=True):
    """One of a Diretrix person's ``enderecos`` (the provider spells ``logadouro``)."""

    street: str | None = msgspec.field(default=None, name="logadouro")
    numero: IdLike = None
    bairro: str | None = None
    cidade: str | None = None
    uf: str | None = None
    cep: IdLike = None
    complemento: str | None = None
    ranking: int | None = None
    street_type: str | None = msgspec.field(default=None, name="logadouroTipo")


class DiretrixPerson(msgspec.Struct, frozen=True):
    """``GET /Consultas/Pessoa/{cpf}`` (every field optional: the provider is loose)."""

    nome: str | None = None
    cpf: IdLike = None
    rg: str | None = None
    rg_issuer: str | None = msgspec.field(default=None, name="rgOrgaoEmissor")
    birth_date: str | None = msgspec.field(default=None, name="dataNascimento")
    idade: int | None = None
    signo: str | None = None
    sexo: str | None = None
    mae: str | None = None
    telefones: list[DiretrixPhone] = msgspec.field(default_factory=list)
    emails: list[DiretrixEmail] = msgspec.field(default_factory=list)
    enderecos: list[DiretrixAddress] = msgspec.field(default_factory=list)


def _cpf_text(value: IdLike) -> str | None:
    if value is None:
        return None
    digits = only_digits(str(value))
    # Numeric CPFs lose their leading zeros in JSON; 14-digit ones are zero-padded.
    if isinstance(value, int) and 0 < len(digits) < CPF_LENGTH:
        digits = digits.zfill(CPF_LENGTH)
    if len(digits) > CPF_LENGTH and digits[: len(digits) - CPF_LENGTH].strip("0") == "":
        digits = digits[-CPF_LENGTH:]
    return digits or None


def parse_candidates(body: bytes) -> list[CpfCandidate]:
    """Parse a lookup answer: entries without a CPF are dropped, order is kept.

    Raises:
        UpstreamError: The body is not a JSON array of objects.
    """
    out: list[CpfCandidate] = []
    for item in decode_json(_NAME, body, list[_Candidate]):
        cpf = _cpf_text(item.cpf)
        if cpf is not None:
            out.append(CpfCandidate(name=(item.nome or "").strip(), cpf=cpf))
    return out


class DiretrixClient:
    """Diretrix over HTTP.

    Args:
        session: The worker's shared session.
        config: Base URL, credentials, timeouts, retry policy.
        breaker: The ``diretrix`` breaker.
    """

    def __init__(
        self, session: aiohttp.ClientSession, config: DiretrixConfig, breaker: CircuitBreaker
    ) -> None:
        auth = aiohttp.encode_basic_auth(config.user, config.password)
        self._transport = UpstreamTransport(
            _NAME,
            session,
            config.base_url,
            timeout=client_timeout(config.timeout_s, config.connect_timeout_s),
            breaker=breaker,
            retry=config.retry,
            headers={"Authorization": auth},
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker guarding Diretrix."""
        return self._transport.breaker

    async def _lookup(self, path: str, route: str) -> list[CpfCandidate]:
        response = await self._transport.request(
            "GET", path, route=route, idempotent=True, accept=(_NOT_FOUND,)
        )
        if response.status == _NOT_FOUND:
            return []
        return parse_candidates(response.body)

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        """Candidates for a phone in national digits (DDD + number); ``[]`` when unknown.

        Raises:
            DependencyUnavailable: Diretrix unreachable, too slow, or its breaker is open.
            UpstreamError: An error status (after retries for 5xx/429) or a garbage body.
        """
        return await self._lookup(
            f"/Consultas/Pessoa/Telefone/{quote(national_phone, safe='')}",
            "GET /Consultas/Pessoa/Telefone/{phone}",
        )

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        """Candidates for an e-mail; ``[]`` when unknown.

        Raises:
            DependencyUnavailable: Diretrix unreachable, too slow, or its breaker is open.
            UpstreamError: An error status (after retries for 5xx/429) or a garbage body.
        """
        return await self._lookup(
            f"/Consultas/Pessoa/Email/{quote(email, safe='@')}",
            "GET /Consultas/Pessoa/Email/{email}",
        )

    async def fetch_person(self, cpf: str) -> DiretrixPerson:
        """The person registered under ``cpf`` (not used by the pipeline; kept for tooling).

        Raises:
            NotFound: Diretrix does not know the CPF.
            DependencyUnavailable: Diretrix unreachable, too slow, or its breaker is open.
            UpstreamError: Another error status or a garbage body.
        """
        response = await self._transport.request(
            "GET",
            f"/Consultas/Pessoa/{quote(cpf, safe='')}",
            route="GET /Consultas/Pessoa/{cpf}",
            idempotent=True,
            accept=(_NOT_FOUND,),
        )
        if response.status == _NOT_FOUND:
            raise NotFound("person not found in Diretrix")
        return decode_json(_NAME, response.body, DiretrixPerson)
