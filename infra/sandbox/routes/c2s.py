"""The simulated C2S API: read a lead, post a message to it, create a lead (bearer token).

With ``update_webhook_url`` configured (``POST /_sandbox/config``), every message received makes
C2S fire an ``on_update_lead`` webhook for that lead, in the background, as the real C2S can.

Every lead of the form :func:`infra.sandbox.people.lead_id_for` ("virtual lead") exists without
being stored, so benchmarks can address a million leads at no memory cost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from litestar import Request, Response, get, post

from infra.sandbox.routes.common import apply_faults, json_response, text_response
from infra.sandbox.state import encode_lead, lead_internal_id

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

    from infra.sandbox.state import SandboxState

__all__ = ["C2SRoutes"]

_UNAUTHORIZED = msgspec.json.encode({"errors": [{"status": "401", "title": "Unauthorized"}]})


class _MessageIn(msgspec.Struct, frozen=True, kw_only=True):
    body: str
    lead_id: str | None = msgspec.field(default=None, name="leadId")
    type: str | None = None


class _NewLeadAttributes(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    type_negotiation: str | None = None
    source: str | None = None
    phone: str | None = None
    email: str | None = None
    seller_id: str | int | None = None


class _NewLeadData(msgspec.Struct, frozen=True, kw_only=True):
    attributes: _NewLeadAttributes
    type: str | None = None


class _NewLeadIn(msgspec.Struct, frozen=True, kw_only=True):
    data: _NewLeadData


def _c2s_error(status: int, title: str, detail: str) -> Response[bytes]:
    body = msgspec.json.encode(
        {"errors": [{"status": str(status), "title": title, "detail": detail}]}
    )
    return json_response(body, status)


class _StoredLead(msgspec.Struct, frozen=True):
    data: _StoredLeadData


class _StoredLeadData(msgspec.Struct, frozen=True):
    attributes: _StoredAttributes


class _StoredAttributes(msgspec.Struct, frozen=True):
    customer: dict[str, str | None] | None = None


class C2SRoutes:
    """``/integration/leads`` routes over one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state
        self._firing: set[asyncio.Task[None]] = set()

    def _fire_update(self, lead_id: str) -> None:
        """Fire ``on_update_lead`` for the lead when configured (background, best effort)."""
        config = self._state.config
        body = self._state.lead_body(lead_id)
        if config.update_webhook_url is None or body is None:
            return
        customer = msgspec.json.decode(body, type=_StoredLead).data.attributes.customer
        event = {
            "id": lead_id,
            "hook_action": "on_update_lead",
            "attributes": {
                "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
                "customer": customer or {},
            },
        }
        headers = {"Content-Type": "application/json"}
        if config.update_webhook_token:
            headers["X-Webhook-Token"] = config.update_webhook_token
        task = asyncio.ensure_future(
            _post_webhook(config.update_webhook_url, msgspec.json.encode(event), headers)
        )
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    def route_handlers(self) -> list[HTTPRouteHandler]:
        """The C2S route handlers, bound to this state."""
        return [
            get("/integration/leads/{lead_id:str}", include_in_schema=False)(self.get_lead),
            post("/integration/leads/{lead_id:str}/create_message", include_in_schema=False)(
                self.create_message
            ),
            post("/integration/leads", include_in_schema=False)(self.create_lead),
        ]

    def _denied(self, request: Request[Any, Any, Any]) -> bool:
        state = self._state
        return (
            request.headers.get("authorization") != state.c2s_auth
            or state.faults.get("c2s").wrong_auth
        )

    async def _gate(self, request: Request[Any, Any, Any], route: str) -> Response[Any] | None:
        """Count the call and apply the faults, then check the credentials: the answer to send
        instead of the real one, or None."""
        fault, _ = await apply_faults(self._state, "c2s", route, request)
        if fault is not None:
            return fault
        if self._denied(request):
            return json_response(_UNAUTHORIZED, 401)
        return None

    async def get_lead(self, request: Request[Any, Any, Any], lead_id: str) -> Response[Any]:
        """``GET /integration/leads/{id}``: the lead, or 404 ``Lead not found`` (text)."""
        state = self._state
        refused = await self._gate(request, "GET /integration/leads/{id}")
        if refused is not None:
            return refused
        body = state.lead_body(lead_id)
        if body is None:
            return text_response("Lead not found", 404)
        return json_response(body)

    async def create_message(self, request: Request[Any, Any, Any], lead_id: str) -> Response[Any]:
        """``POST /integration/leads/{id}/create_message``: store the message, 201 with its id."""
        state = self._state
        refused = await self._gate(request, "POST /integration/leads/{id}/create_message")
        if refused is not None:
            return refused
        if state.lead_body(lead_id) is None:
            return text_response("Lead not found", 404)
        try:
            message = msgspec.json.decode(await request.body(), type=_MessageIn)
        except msgspec.DecodeError as exc:
            return _c2s_error(422, "Unprocessable Entity", str(exc))
        if message.lead_id is not None and message.lead_id != lead_id:
            return _c2s_error(422, "Unprocessable Entity", "leadId does not match the path")
        message_id = state.add_message(lead_id, message.body, message.type)
        self._fire_update(lead_id)
        return json_response(
            msgspec.json.encode({"success": True, "data": {"id": message_id, "type": "message"}}),
            201,
        )

    async def create_lead(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """``POST /integration/leads``: store a new lead, 201 with its JSON:API resource."""
        state = self._state
        refused = await self._gate(request, "POST /integration/leads")
        if refused is not None:
            return refused
        try:
            payload = msgspec.json.decode(await request.body(), type=_NewLeadIn)
        except msgspec.DecodeError as exc:
            return _c2s_error(422, "Unprocessable Entity", str(exc))
        attrs = payload.data.attributes
        lead_id = state.new_lead_id()
        customer = {
            "id": f"cus_{lead_id[:9]}",
            "name": attrs.name,
            "email": attrs.email,
            "phone": attrs.phone,
            "phone2": None,
        }
        internal_id = lead_internal_id(lead_id)
        state.store_lead(
            lead_id, encode_lead(lead_id, internal_id, customer, attrs.description, None)
        )
        return json_response(
            msgspec.json.encode(
                {
                    "data": {
                        "id": lead_id,
                        "type": "lead",
                        "internal_id": internal_id,
                        "attributes": {
                            "customer": customer,
                            "description": attrs.description,
                            "source": attrs.source,
                            "type_negotiation": attrs.type_negotiation,
                        },
                    }
                }
            ),
            201,
        )


async def _post_webhook(url: str, body: bytes, headers: dict[str, str]) -> None:
    """POST one webhook; a failure is the receiver's problem (C2S does not retry here either)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return
