"""The sandbox's own test helpers under ``/_sandbox``: health, reset, config, leads, messages,
people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response, get, post

from domain.errors import InvalidInput
from infra.sandbox.routes.common import json_response
from infra.sandbox.state import SandboxConfig, encode_lead, lead_internal_id, person_customer

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

    from infra.sandbox.people import Person
    from infra.sandbox.state import SandboxState

__all__ = ["ControlRoutes", "CreateSandboxLead"]

_CUSTOMER_KEYS = frozenset({"id", "name", "email", "phone", "phone2", "phone_global"})


class CreateSandboxLead(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /_sandbox/leads``: a lead for a synthetic person and/or explicit customer fields.

    ``customer`` keys override the person's values; a key set to null is served as null, a key
    absent from both is absent from the C2S payload.
    """

    person_index: int | None = None
    cpf: str | None = None
    customer: dict[str, str | None] | None = None
    description: str | None = "Lead de teste do sandbox"
    product_ref: str | None = "SBX-0001"
    lead_id: str | None = None


def _error(message: str, status: int) -> Response[bytes]:
    return json_response(msgspec.json.encode({"error": message}), status)


class ControlRoutes:
    """``/_sandbox`` health, reset, lead, message and people routes over one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def route_handlers(self) -> list[HTTPRouteHandler]:
        """The control route handlers, bound to this state."""
        return [
            get("/_sandbox/health", include_in_schema=False)(self.health),
            post("/_sandbox/reset", status_code=200, include_in_schema=False)(self.reset),
            get("/_sandbox/config", include_in_schema=False)(self.get_config),
            post("/_sandbox/config", status_code=200, include_in_schema=False)(self.set_config),
            post("/_sandbox/leads", include_in_schema=False)(self.create_lead),
            get("/_sandbox/leads/{lead_id:str}/messages", include_in_schema=False)(
                self.lead_messages
            ),
            get("/_sandbox/people/{index:int}", include_in_schema=False)(self.person_summary),
        ]

    async def health(self) -> dict[str, Any]:
        """``GET /_sandbox/health``: up, with the seed."""
        return {"status": "ok", "seed": self._state.settings.seed}

    async def reset(self) -> dict[str, bool]:
        """``POST /_sandbox/reset``: forget leads, messages, faults and counters."""
        self._state.reset()
        return {"reset": True}

    async def get_config(self) -> Response[Any]:
        """``GET /_sandbox/config``: the simulated C2S's behaviour knobs."""
        return json_response(msgspec.json.encode(self._state.config))

    async def set_config(self, data: SandboxConfig) -> Response[Any]:
        """``POST /_sandbox/config``: replace the knobs (omitted ones take their defaults)."""
        self._state.config = data
        return json_response(msgspec.json.encode(data))

    async def create_lead(self, data: CreateSandboxLead) -> Response[Any]:
        """``POST /_sandbox/leads``: store a lead; 201 with its id, CPF and customer."""
        state = self._state
        people = state.people
        person: Person | None = None
        try:
            if data.person_index is not None:
                person = people.person(data.person_index)
            elif data.cpf is not None:
                person = people.by_cpf(data.cpf)
        except (ValueError, InvalidInput) as exc:
            return _error(str(exc), 400)
        customer: dict[str, str | None] = person_customer(person) if person is not None else {}
        extra = data.customer or {}
        unknown = set(extra) - _CUSTOMER_KEYS
        if unknown:
            return _error(f"unknown customer keys: {sorted(unknown)}", 400)
        customer.update(extra)
        if person is not None:
            people.register(person)
        lead_id = data.lead_id or state.new_lead_id()
        internal_id = (
            data.person_index if data.person_index is not None else lead_internal_id(lead_id)
        )
        state.store_lead(
            lead_id,
            encode_lead(lead_id, internal_id, customer, data.description, data.product_ref),
        )
        return json_response(
            msgspec.json.encode(
                {
                    "lead_id": lead_id,
                    "cpf": person.cpf if person is not None else None,
                    "person_index": data.person_index,
                    "customer": customer,
                }
            ),
            201,
        )

    async def lead_messages(self, lead_id: str) -> Response[Any]:
        """``GET /_sandbox/leads/{id}/messages``: what C2S received for the lead."""
        state = self._state
        if state.lead_body(lead_id) is None:
            return _error("unknown lead", 404)
        messages = state.messages.get(lead_id, [])
        return json_response(msgspec.json.encode({"lead_id": lead_id, "messages": messages}))

    async def person_summary(self, index: int) -> Response[Any]:
        """``GET /_sandbox/people/{index}``: a synthetic person's identifiers and lead id."""
        if index < 0:
            return _error("index must be >= 0", 400)
        people = self._state.people
        p = people.person(index)
        return json_response(
            msgspec.json.encode(
                {
                    "index": index,
                    "cpf": p.cpf,
                    "name": p.name,
                    "mobile": p.mobile,
                    "email": p.email,
                    "phones": [ph.number for ph in p.phones],
                    "emails": list(p.emails),
                    "lead_id": people.lead_id(index),
                }
            )
        )
