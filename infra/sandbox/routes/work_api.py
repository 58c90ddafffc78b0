"""The simulated Work API: ``GET /api?token=&modulo=&consulta=``.

Like the real API, errors are answered inside HTTP 200 as error bodies ("soft errors"): a wrong
token, an unknown module, a document not found, no credits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get

from domain.documents import normalize_cpf, only_digits
from domain.errors import InvalidInput
from infra.sandbox.faults import soft_error_body
from infra.sandbox.routes.common import apply_faults, json_response

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

    from infra.sandbox.state import SandboxState

__all__ = ["WorkApiRoutes"]

_CEP_LENGTH = 8


class WorkApiRoutes:
    """The ``/api`` route over one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def route_handlers(self) -> list[HTTPRouteHandler]:
        """The Work API route handler, bound to this state."""
        return [get("/api", include_in_schema=False)(self.query)]

    async def query(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """``GET /api``: the ``cpf`` dossier or the ``cep`` address, else a soft error."""
        state = self._state
        fault, soft = await apply_faults(state, "work_api", "GET /api", request)
        if fault is not None:
            return fault
        query = request.query_params
        module = query.get("modulo") or ""
        config = state.faults.get("work_api")
        if query.get("token") != state.settings.work_api_token or config.wrong_auth:
            return json_response(soft_error_body("expired_token"))
        if soft:
            return json_response(soft_error_body(config.soft_error_kind, module))
        consulta = query.get("consulta") or ""
        if module == "cpf":
            try:
                cpf = normalize_cpf(consulta)
            except InvalidInput:
                return json_response(soft_error_body("not_found"))
            return json_response(state.people.dossier_json(cpf))
        if module == "cep":
            cep = only_digits(consulta)
            if len(cep) != _CEP_LENGTH:
                return json_response(soft_error_body("not_found"))
            return json_response(state.people.cep_json(cep))
        if module == "cnpj":
            # The real API answers every CNPJ query of this account with "no credits".
            return json_response(soft_error_body("no_credits"))
        return json_response(soft_error_body("unknown_module", module))
