"""The simulated Diretrix API: CPF candidates by phone or e-mail, a person by CPF (HTTP Basic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, get

from domain.documents import is_valid_cpf
from infra.sandbox.routes.common import apply_faults, json_response

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

    from infra.sandbox.state import SandboxState

__all__ = ["DiretrixRoutes"]

_UNAUTHORIZED = msgspec.json.encode({"message": "Authorization has been denied for this request."})
_EMPTY_LIST = b"[]"


class DiretrixRoutes:
    """``/Consultas/Pessoa`` routes over one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def route_handlers(self) -> list[HTTPRouteHandler]:
        """The Diretrix route handlers, bound to this state."""
        return [
            get("/Consultas/Pessoa/Telefone/{phone:str}", include_in_schema=False)(self.by_phone),
            get("/Consultas/Pessoa/Email/{email:str}", include_in_schema=False)(self.by_email),
            get("/Consultas/Pessoa/{cpf:str}", include_in_schema=False)(self.person),
        ]

    def _denied(self, request: Request[Any, Any, Any]) -> bool:
        state = self._state
        return (
            request.headers.get("authorization") != state.diretrix_auth
            or state.faults.get("diretrix").wrong_auth
        )

    async def _gate(self, request: Request[Any, Any, Any], route: str) -> Response[Any] | None:
        """Count the call and apply the faults, then check the credentials: the answer to send
        instead of the real one, or None."""
        fault, _ = await apply_faults(self._state, "diretrix", route, request)
        if fault is not None:
            return fault
        if self._denied(request):
            return json_response(_UNAUTHORIZED, 401)
        return None

    def _candidates(self, cpf: str | None) -> bytes:
        if cpf is None:
            return _EMPTY_LIST
        return msgspec.json.encode([{"nome": self._state.people.by_cpf(cpf).name, "cpf": cpf}])

    async def by_phone(self, request: Request[Any, Any, Any], phone: str) -> Response[Any]:
        """``GET /Consultas/Pessoa/Telefone/{phone}``: ``[{nome, cpf}]`` or ``[]``."""
        refused = await self._gate(request, "GET /Consultas/Pessoa/Telefone/{phone}")
        if refused is not None:
            return refused
        return json_response(self._candidates(self._state.people.cpf_by_phone(phone)))

    async def by_email(self, request: Request[Any, Any, Any], email: str) -> Response[Any]:
        """``GET /Consultas/Pessoa/Email/{email}``: ``[{nome, cpf}]`` or ``[]``."""
        refused = await self._gate(request, "GET /Consultas/Pessoa/Email/{email}")
        if refused is not None:
            return refused
        return json_response(self._candidates(self._state.people.cpf_by_email(email)))

    async def person(self, request: Request[Any, Any, Any], cpf: str) -> Response[Any]:
        """``GET /Consultas/Pessoa/{cpf}``: the person, or 404 for an invalid CPF."""
        state = self._state
        refused = await self._gate(request, "GET /Consultas/Pessoa/{cpf}")
        if refused is not None:
            return refused
        if not is_valid_cpf(cpf):
            return json_response(msgspec.json.encode({"message": "Pessoa não encontrada"}), 404)
        return json_response(msgspec.json.encode(state.people.diretrix_person(cpf)))
