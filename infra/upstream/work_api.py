"""Work API client: implements :class:`domain.ports.WorkApiPort`.

``GET {base}/api?token=&modulo=&consulta=``. The upstream reports most errors inside HTTP 200
bodies ("soft errors"), which must never be stored as data: every body is checked before it
is returned (:func:`detect_soft_error`) and a soft error is raised as
:class:`~domain.errors.UpstreamSoftError`, never returned:

==================  ===========================================================  =============
kind                recognised by                                                 breaker
==================  ===========================================================  =============
``no_credits``      ``code``/``status`` 429, or "credits"/"créditos" in the text  failure
``unknown_module``  "inexistente" / "módulo" in the text                          not a failure
``expired_token``   ``status``/``code`` 401 or 403, or "token" in the text        failure
``not_found``       ``status``/``code`` 404, "não encontrado", "not found"; a
                    ``modulo=cpf`` object without ``DadosBasicos``                not a failure
``other``           any other ``status``/``code`` != 200, an ``erro``/``error``
                    field, a ``statusMsg`` without status, a non-object ``cpf``   not a failure
==================  ===========================================================  =============

Expired tokens and exhausted credits will not heal by retrying and every further call fails the
same way, so they count against the breaker (fast 503s, probes every wait); the others are
answers about one query. Soft errors are never retried. The token is a query parameter: it is
never logged (logs name the route template) and exceptions never carry the URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from domain.dossier import Dossier, decode_dossier
from domain.errors import InvalidInput, UpstreamError, UpstreamSoftError
from infra.upstream.http import (
    DEFAULT_RETRY,
    RetryPolicy,
    UpstreamResponse,
    UpstreamTransport,
    client_timeout,
)

if TYPE_CHECKING:
    import aiohttp

    from infra.breaker.circuit import CircuitBreaker

__all__ = ["WorkApiClient", "WorkApiConfig", "detect_soft_error"]

_NAME = "work_api"
_OK = 200
_NOT_FOUND_CODES = frozenset({404})
_AUTH_CODES = frozenset({401, 403})
_NO_CREDITS = 429


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkApiConfig:
    """How to reach the Work API (the app maps ``Settings.work_api_*`` onto this).

    Attributes:
        base_url: e.g. ``https://completa.workbuscas.com`` (``/api`` is appended).
        token: The ``token`` query parameter (hidden from ``repr``).
        timeout_s: Whole-call bound per attempt (observed latency is 0.4-0.7 s with a slow
            tail).
        connect_timeout_s: Socket connect bound.
        retry: Retry policy (every Work API call is a read).
    """

    base_url: str
    token: str = field(repr=False)
    timeout_s: float = 15.0
    connect_timeout_s: float = 2.0
    retry: RetryPolicy = DEFAULT_RETRY


class _Present(msgspec.Struct, frozen=True):
    """Matches any JSON object without decoding its members (a presence check)."""


class _SoftProbe(msgspec.Struct, frozen=True):
    # Any: the upstream puts numbers, strings or objects in these; they are only inspected.
    status: Any = None
    code: Any = None
    status_msg: Any = msgspec.field(default=None, name="statusMsg")
    message: Any = None
    reason: Any = None
    erro: Any = None
    error: Any = None
    dados_basicos: _Present | None = msgspec.field(default=None, name="DadosBasicos")


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _classify(codes: set[int], text: str) -> str:
    if _NO_CREDITS in codes or "credit" in text or "crédito" in text:
        return "no_credits"
    if "inexistente" in text or "módulo" in text or "modulo" in text:
        return "unknown_module"
    if codes & _AUTH_CODES or "token" in text:
        return "expired_token"
    if codes & _NOT_FOUND_CODES or "encontrad" in text or "not found" in text:
        return "not_found"
    return "other"


def detect_soft_error(body: bytes, module: str) -> None:
    """Raise if a 200 body is a Work API error rather than data.

    Args:
        body: The response body.
        module: The ``modulo`` asked for (``cpf`` bodies must be dossier objects).

    Raises:
        UpstreamSoftError: With ``kind`` per the module docstring's table.
        UpstreamError: The body is not JSON at all (status 200: a garbage body).
    """
    head = body.lstrip()[:1]
    if head == b"[":
        if module == "cpf":
            raise UpstreamSoftError(_NAME, "work api sent a list for a cpf query", None, "other")
        return
    try:
        probe = msgspec.json.decode(body, type=_SoftProbe)
    except msgspec.ValidationError:
        # Valid JSON, but not an object (a bare string, number...).
        raise UpstreamSoftError(_NAME, "work api sent a non-object body", None, "other") from None
    except msgspec.DecodeError:
        raise UpstreamError(_NAME, "work_api sent an unparsable body", 200) from None
    status = _as_int(probe.status)
    code = _as_int(probe.code)
    failed = (
        (probe.status is not None and status != _OK)
        or (probe.code is not None and code != _OK)
        or bool(probe.erro)
        or bool(probe.error)
        or (probe.status is None and probe.status_msg is not None)
    )
    if not failed:
        if module == "cpf" and probe.dados_basicos is None:
            raise UpstreamSoftError(
                _NAME, "work api dossier has no DadosBasicos", status, "not_found"
            )
        return
    codes = {c for c in (status, code) if c is not None}
    parts = (probe.status_msg, probe.message, probe.reason, probe.erro, probe.error)
    text = " ".join(str(p) for p in parts if p).lower()
    kind = _classify(codes, text)
    raise UpstreamSoftError(
        _NAME,
        f"work api answered a soft error ({kind})",
        code if code is not None else status,
        kind,
    )


class WorkApiClient:
    """The Work API over HTTP.

    Args:
        session: The worker's shared session.
        config: Base URL, token, timeouts, retry policy.
        breaker: The ``work_api`` breaker.
    """

    def __init__(
        self, session: aiohttp.ClientSession, config: WorkApiConfig, breaker: CircuitBreaker
    ) -> None:
        self._token = config.token
        self._transport = UpstreamTransport(
            _NAME,
            session,
            config.base_url,
            timeout=client_timeout(config.timeout_s, config.connect_timeout_s),
            breaker=breaker,
            retry=config.retry,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker guarding the Work API."""
        return self._transport.breaker

    async def fetch_module(self, module: str, query: str) -> bytes:
        """The raw JSON body of ``modulo=module&consulta=query`` (retried: it is a read).

        Raises:
            UpstreamSoftError: The body carries an error inside HTTP 200 (never returned).
            DependencyUnavailable: Unreachable, too slow, or the breaker is open.
            UpstreamError: An error status or a garbage body.
        """

        def validate(response: UpstreamResponse) -> None:
            detect_soft_error(response.body, module)

        response = await self._transport.request(
            "GET",
            "/api",
            route=f"GET /api?modulo={module}" if module in ("cpf", "cep") else "GET /api",
            params={"token": self._token, "modulo": module, "consulta": query},
            idempotent=True,
            validate=validate,
        )
        return response.body

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        """The ``modulo=cpf`` dossier of ``cpf`` (11 digits), decoded, and its raw bytes.

        Raises:
            UpstreamSoftError: Soft error (``not_found`` for an unknown CPF).
            DependencyUnavailable: Unreachable, too slow, or the breaker is open.
            UpstreamError: An error status or a garbage body.
        """
        raw = await self.fetch_module("cpf", cpf)
        try:
            return decode_dossier(raw), raw
        except InvalidInput:
            raise UpstreamError(_NAME, "work_api sent an undecodable dossier", 200) from None
