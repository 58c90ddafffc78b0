"""The sandbox: C2S, Diretrix and the Work API on one HTTP server, speaking their wire formats.

``behaviour.md`` section 3 is the contract. Run it with
``granian --interface asgi --factory infra.sandbox.app:create_sandbox_app`` or
:func:`run_sandbox`. Configuration comes from the environment:

=========================  ======================  ==========================================
variable                   default                 meaning
=========================  ======================  ==========================================
``SANDBOX_PORT``           ``8099``                port (:func:`run_sandbox` / ``__main__``)
``SANDBOX_SEED``           ``20251122``            seed of the synthetic people and the faults
``SANDBOX_C2S_TOKEN``      ``sandbox-c2s-token``   C2S bearer token
``SANDBOX_DIRETRIX_USER``  ``sandbox``             Diretrix Basic user
``SANDBOX_DIRETRIX_PASS``  ``sandbox-pass``        Diretrix Basic password
``SANDBOX_WORK_API_TOKEN`` ``sandbox-work-token``  Work API ``token`` query parameter
``SANDBOX_REGISTRY_SIZE``  ``10000``               people Diretrix can find by phone/e-mail
=========================  ======================  ==========================================

Upstream routes: ``GET /integration/leads/{id}``, ``POST /integration/leads/{id}/create_message``,
``POST /integration/leads`` (C2S, bearer); ``GET /Consultas/Pessoa/Telefone/{phone}``,
``GET /Consultas/Pessoa/Email/{email}``, ``GET /Consultas/Pessoa/{cpf}`` (Diretrix, Basic);
``GET /api?token=&modulo=&consulta=`` (Work API; errors inside HTTP 200 like the real one).

Test helpers under ``/_sandbox``: ``GET health``, ``POST reset``, ``POST leads`` (a lead for a
synthetic person and/or explicit customer fields), ``GET leads/{id}/messages``,
``GET people/{index}``, ``GET|POST faults/{upstream}``, ``GET|DELETE faults``,
``GET|DELETE counters``.

Every C2S lead of the form :func:`infra.sandbox.people.lead_id_for` ("virtual lead") exists
without being stored: benchmarks can address a million leads at no memory cost.

Single worker by design: state (leads, messages, faults, counters) is process memory.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.enums import MediaType

from domain.documents import is_valid_cpf, normalize_cpf, only_digits
from domain.errors import InvalidInput
from infra.sandbox.faults import (
    NO_FAULTS,
    UPSTREAMS,
    CallCounters,
    FaultConfig,
    Faults,
    Upstream,
    soft_error_body,
)
from infra.sandbox.people import LruBytes, Person, SyntheticPeople

__all__ = [
    "SandboxSettings",
    "SandboxState",
    "create_sandbox_app",
    "run_sandbox",
    "sandbox_settings_from_env",
]

_DEFAULT_PORT = 8099
_DEFAULT_SEED = 20251122
# Well-known sandbox credentials: they protect nothing, they let tests exercise auth failures.
_DEFAULT_C2S_TOKEN = "sandbox-c2s-token"  # noqa: S105
_DEFAULT_DIRETRIX_USER = "sandbox"
_DEFAULT_DIRETRIX_PASS = "sandbox-pass"  # noqa: S105
_DEFAULT_WORK_API_TOKEN = "sandbox-work-token"  # noqa: S105
_MAX_STORED_LEADS = 100_000
_MAX_LEADS_WITH_MESSAGES = 100_000
_MAX_MESSAGES_PER_LEAD = 100
_CUSTOMER_KEYS = frozenset({"id", "name", "email", "phone", "phone2", "phone_global"})
_CEP_LENGTH = 8
_TZ = dt.timezone(dt.timedelta(hours=-3))  # C2S timestamps are in Brasília time
_STARTED = dt.datetime(2025, 11, 20, 9, 30, tzinfo=_TZ)

_JSON = MediaType.JSON
_TEXT = MediaType.TEXT


class SandboxSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Sandbox configuration (see the module docstring for the environment variables)."""

    port: int = _DEFAULT_PORT
    seed: int = _DEFAULT_SEED
    c2s_token: str = _DEFAULT_C2S_TOKEN
    diretrix_user: str = _DEFAULT_DIRETRIX_USER
    diretrix_pass: str = _DEFAULT_DIRETRIX_PASS
    work_api_token: str = _DEFAULT_WORK_API_TOKEN
    registry_size: int = 10_000

    def __repr__(self) -> str:
        return f"SandboxSettings(port={self.port}, seed={self.seed})"


def sandbox_settings_from_env(environ: dict[str, str] | None = None) -> SandboxSettings:
    """Read :class:`SandboxSettings` from ``SANDBOX_*`` variables.

    Raises:
        ValueError: When a numeric variable is not an integer.
    """
    env = dict(os.environ if environ is None else environ)
    return SandboxSettings(
        port=int(env.get("SANDBOX_PORT", _DEFAULT_PORT)),
        seed=int(env.get("SANDBOX_SEED", _DEFAULT_SEED)),
        c2s_token=env.get("SANDBOX_C2S_TOKEN", _DEFAULT_C2S_TOKEN),
        diretrix_user=env.get("SANDBOX_DIRETRIX_USER", _DEFAULT_DIRETRIX_USER),
        diretrix_pass=env.get("SANDBOX_DIRETRIX_PASS", _DEFAULT_DIRETRIX_PASS),
        work_api_token=env.get("SANDBOX_WORK_API_TOKEN", _DEFAULT_WORK_API_TOKEN),
        registry_size=int(env.get("SANDBOX_REGISTRY_SIZE", 10_000)),
    )


# --------------------------------------------------------------------------------------------
# Wire types of the admin API and the C2S write endpoints
# --------------------------------------------------------------------------------------------


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


class _Lead:
    """A stored lead and its encoded C2S representation."""

    __slots__ = ("body", "lead_id")

    def __init__(self, lead_id: str, body: bytes) -> None:
        self.lead_id = lead_id
        self.body = body


class SandboxState:
    """Everything the sandbox remembers (process memory, bounded)."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.people = SyntheticPeople(settings.seed, registry_size=settings.registry_size)
        self.faults = Faults(settings.seed)
        self.counters = CallCounters()
        self.leads: OrderedDict[str, _Lead] = OrderedDict()
        self.virtual_leads = LruBytes(4096)
        self.messages: OrderedDict[str, list[dict[str, str | None]]] = OrderedDict()
        self._created = 0
        self._lock = threading.Lock()
        self.c2s_auth = f"Bearer {settings.c2s_token}"
        basic = f"{settings.diretrix_user}:{settings.diretrix_pass}".encode()
        self.diretrix_auth = "Basic " + base64.b64encode(basic).decode()

    def reset(self) -> None:
        """Forget leads, messages, faults, counters and registered contacts."""
        with self._lock:
            self.leads.clear()
            self.messages.clear()
        self.virtual_leads.clear()  # serving one re-registers its person's contacts
        self.faults.reset()
        self.counters.reset()
        self.people.clear_registered()

    def new_lead_id(self) -> str:
        """A fresh 32-hex lead id (deterministic per seed and creation order)."""
        with self._lock:
            self._created += 1
            n = self._created
        return hashlib.blake2b(
            f"created:{self.settings.seed}:{n}".encode(), digest_size=16
        ).hexdigest()

    def store_lead(self, lead_id: str, body: bytes) -> None:
        """Keep a lead (oldest dropped beyond the bound)."""
        with self._lock:
            self.leads[lead_id] = _Lead(lead_id, body)
            self.leads.move_to_end(lead_id)
            while len(self.leads) > _MAX_STORED_LEADS:
                self.leads.popitem(last=False)

    def lead_body(self, lead_id: str) -> bytes | None:
        """The encoded C2S body of a stored or virtual lead."""
        stored = self.leads.get(lead_id)
        if stored is not None:
            return stored.body
        cached = self.virtual_leads.get(lead_id)
        if cached is not None:
            return cached
        index = self.people.index_for_lead(lead_id)
        if index is None:
            return None
        person = self.people.person(index)
        self.people.register(person)  # its contacts become findable, like a real lead's
        body = _encode_lead(lead_id, index, _person_customer(person), None, None)
        self.virtual_leads.put(lead_id, body)
        return body

    def add_message(self, lead_id: str, body: str, kind: str | None) -> str:
        """Record a message posted to a lead; returns its id."""
        message_id = hashlib.blake2b(
            f"msg:{lead_id}:{body}:{len(self.messages.get(lead_id, ()))}".encode(), digest_size=16
        ).hexdigest()
        record: dict[str, str | None] = {
            "id": message_id,
            "body": body,
            "type": kind,
            "received_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        with self._lock:
            messages = self.messages.setdefault(lead_id, [])
            messages.append(record)
            del messages[:-_MAX_MESSAGES_PER_LEAD]
            self.messages.move_to_end(lead_id)
            while len(self.messages) > _MAX_LEADS_WITH_MESSAGES:
                self.messages.popitem(last=False)
        return message_id


def _internal_id(lead_id: str) -> int:
    """C2S's numeric ``internal_id`` of a stored lead (stable for its id)."""
    digest = hashlib.blake2b(lead_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 10_000_000


def _as_upstream(name: str) -> Upstream | None:
    for upstream in UPSTREAMS:
        if upstream == name:
            return upstream
    return None


def _person_customer(person: Person) -> dict[str, str | None]:
    return {
        "id": f"cus_{person.cpf[:9]}",
        "name": person.name.title(),
        "email": person.email,
        "phone": person.mobile_e164,
        "phone2": None,
    }


def _encode_lead(
    lead_id: str,
    internal_id: int,
    customer: dict[str, str | None],
    description: str | None,
    product_ref: str | None,
) -> bytes:
    created = _STARTED + dt.timedelta(minutes=internal_id % 50_000)
    stamp = created.isoformat(timespec="milliseconds")
    return msgspec.json.encode(
        {
            "data": {
                "id": lead_id,
                "type": "lead",
                "internal_id": internal_id,
                "attributes": {
                    "customer": customer,
                    "description": description
                    if description is not None
                    else "Tenho interesse no imóvel anunciado.",
                    "product": {
                        "id": f"prod_{internal_id % 997}",
                        "description": "Apartamento 2 dormitórios",
                        "prop_ref": product_ref
                        if product_ref is not None
                        else f"REF-{internal_id % 9973}",
                    },
                    "lead_source": {"id": 7, "name": "Portal Imobiliário"},
                    "lead_status": {"id": 1, "alias": "novo", "name": "Novo"},
                    "seller": {
                        "id": "sel_1",
                        "name": "Corretor Sandbox",
                        "email": "corretor@example.com",
                    },
                    "created_at": stamp,
                    "updated_at": stamp,
                },
            }
        }
    )


# --------------------------------------------------------------------------------------------
# Shared request plumbing
# --------------------------------------------------------------------------------------------


def _json(body: bytes, status: int = 200) -> Response[bytes]:
    return Response(body, status_code=status, media_type=_JSON)


def _text(body: str, status: int) -> Response[str]:
    return Response(body, status_code=status, media_type=_TEXT)


async def _hang(request: Request[Any, Any, Any], seconds: float) -> None:
    """Hold the request until the client disconnects or ``seconds`` pass."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return
    except TimeoutError:
        return


async def _faults(
    state: SandboxState, upstream: Upstream, route: str, request: Request[Any, Any, Any]
) -> tuple[Response[Any] | None, bool]:
    """Count the call and apply the upstream's faults.

    Returns:
        ``(response, soft_error)``: a response to send instead of the real answer (or None), and
        whether a Work API soft error was drawn.
    """
    state.counters.hit(upstream, route)
    config = state.faults.get(upstream)
    if config is NO_FAULTS:
        return None, False
    decision = state.faults.decide(config)
    if decision.delay_s:
        await asyncio.sleep(decision.delay_s)
    if decision.action == "hang":
        await _hang(request, config.hang_s)
        return _text("upstream timed out", 504), False
    if decision.action == "error":
        headers = (
            {"Retry-After": str(config.retry_after_s)}
            if config.error_status in (429, 503)
            else None
        )
        response = Response(
            "Simulated upstream failure",
            status_code=config.error_status,
            media_type=_TEXT,
            headers=headers,
        )
        return response, False
    return None, decision.action == "soft_error"


_UNAUTHORIZED_C2S = msgspec.json.encode({"errors": [{"status": "401", "title": "Unauthorized"}]})
_UNAUTHORIZED_DIRETRIX = msgspec.json.encode(
    {"message": "Authorization has been denied for this request."}
)
_EMPTY_LIST = b"[]"


def _c2s_error(status: int, title: str, detail: str) -> Response[bytes]:
    body = msgspec.json.encode(
        {"errors": [{"status": str(status), "title": title, "detail": detail}]}
    )
    return _json(body, status)


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


def create_sandbox_app(settings: SandboxSettings | None = None) -> Litestar:
    """Build the sandbox ASGI app (Granian ``--factory`` target).

    Args:
        settings: Configuration; default: :func:`sandbox_settings_from_env`.

    Returns:
        The Litestar app; its state lives in the closure (one worker, one state).
    """
    state = SandboxState(settings if settings is not None else sandbox_settings_from_env())
    people = state.people

    # ---- C2S ------------------------------------------------------------------------------

    @get("/integration/leads/{lead_id:str}", include_in_schema=False)
    async def c2s_get_lead(request: Request[Any, Any, Any], lead_id: str) -> Response[Any]:
        fault, _ = await _faults(state, "c2s", "GET /integration/leads/{id}", request)
        if fault is not None:
            return fault
        if (
            request.headers.get("authorization") != state.c2s_auth
            or state.faults.get("c2s").wrong_auth
        ):
            return _json(_UNAUTHORIZED_C2S, 401)
        body = state.lead_body(lead_id)
        if body is None:
            return _text("Lead not found", 404)
        return _json(body)

    @post("/integration/leads/{lead_id:str}/create_message", include_in_schema=False)
    async def c2s_create_message(request: Request[Any, Any, Any], lead_id: str) -> Response[Any]:
        fault, _ = await _faults(
            state, "c2s", "POST /integration/leads/{id}/create_message", request
        )
        if fault is not None:
            return fault
        if (
            request.headers.get("authorization") != state.c2s_auth
            or state.faults.get("c2s").wrong_auth
        ):
            return _json(_UNAUTHORIZED_C2S, 401)
        if state.lead_body(lead_id) is None:
            return _text("Lead not found", 404)
        try:
            message = msgspec.json.decode(await request.body(), type=_MessageIn)
        except msgspec.DecodeError as exc:
            return _c2s_error(422, "Unprocessable Entity", str(exc))
        if message.lead_id is not None and message.lead_id != lead_id:
            return _c2s_error(422, "Unprocessable Entity", "leadId does not match the path")
        message_id = state.add_message(lead_id, message.body, message.type)
        return _json(
            msgspec.json.encode({"success": True, "data": {"id": message_id, "type": "message"}}),
            201,
        )

    @post("/integration/leads", include_in_schema=False)
    async def c2s_create_lead(request: Request[Any, Any, Any]) -> Response[Any]:
        fault, _ = await _faults(state, "c2s", "POST /integration/leads", request)
        if fault is not None:
            return fault
        if (
            request.headers.get("authorization") != state.c2s_auth
            or state.faults.get("c2s").wrong_auth
        ):
            return _json(_UNAUTHORIZED_C2S, 401)
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
        internal_id = _internal_id(lead_id)
        state.store_lead(
            lead_id, _encode_lead(lead_id, internal_id, customer, attrs.description, None)
        )
        return _json(
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

    # ---- Diretrix ---------------------------------------------------------------------------

    def diretrix_denied(request: Request[Any, Any, Any]) -> bool:
        return (
            request.headers.get("authorization") != state.diretrix_auth
            or state.faults.get("diretrix").wrong_auth
        )

    def candidates(cpf: str | None) -> bytes:
        if cpf is None:
            return _EMPTY_LIST
        return msgspec.json.encode([{"nome": people.by_cpf(cpf).name, "cpf": cpf}])

    @get("/Consultas/Pessoa/Telefone/{phone:str}", include_in_schema=False)
    async def diretrix_by_phone(request: Request[Any, Any, Any], phone: str) -> Response[Any]:
        fault, _ = await _faults(
            state, "diretrix", "GET /Consultas/Pessoa/Telefone/{phone}", request
        )
        if fault is not None:
            return fault
        if diretrix_denied(request):
            return _json(_UNAUTHORIZED_DIRETRIX, 401)
        return _json(candidates(people.cpf_by_phone(phone)))

    @get("/Consultas/Pessoa/Email/{email:str}", include_in_schema=False)
    async def diretrix_by_email(request: Request[Any, Any, Any], email: str) -> Response[Any]:
        fault, _ = await _faults(state, "diretrix", "GET /Consultas/Pessoa/Email/{email}", request)
        if fault is not None:
            return fault
        if diretrix_denied(request):
            return _json(_UNAUTHORIZED_DIRETRIX, 401)
        return _json(candidates(people.cpf_by_email(email)))

    @get("/Consultas/Pessoa/{cpf:str}", include_in_schema=False)
    async def diretrix_person(request: Request[Any, Any, Any], cpf: str) -> Response[Any]:
        fault, _ = await _faults(state, "diretrix", "GET /Consultas/Pessoa/{cpf}", request)
        if fault is not None:
            return fault
        if diretrix_denied(request):
            return _json(_UNAUTHORIZED_DIRETRIX, 401)
        if not is_valid_cpf(cpf):
            return _json(msgspec.json.encode({"message": "Pessoa não encontrada"}), 404)
        return _json(msgspec.json.encode(people.diretrix_person(cpf)))

    # ---- Work API ---------------------------------------------------------------------------

    @get("/api", include_in_schema=False)
    async def work_api(request: Request[Any, Any, Any]) -> Response[Any]:
        fault, soft = await _faults(state, "work_api", "GET /api", request)
        if fault is not None:
            return fault
        query = request.query_params
        module = query.get("modulo") or ""
        config = state.faults.get("work_api")
        if query.get("token") != state.settings.work_api_token or config.wrong_auth:
            return _json(soft_error_body("expired_token"))
        if soft:
            return _json(soft_error_body(config.soft_error_kind, module))
        consulta = query.get("consulta") or ""
        if module == "cpf":
            try:
                cpf = normalize_cpf(consulta)
            except InvalidInput:
                return _json(soft_error_body("not_found"))
            return _json(people.dossier_json(cpf))
        if module == "cep":
            cep = only_digits(consulta)
            if len(cep) != _CEP_LENGTH:
                return _json(soft_error_body("not_found"))
            return _json(people.cep_json(cep))
        if module == "cnpj":
            # Observed on the real API with the project's token (behaviour.md 3.3).
            return _json(soft_error_body("no_credits"))
        return _json(soft_error_body("unknown_module", module))

    # ---- admin ------------------------------------------------------------------------------

    @get("/_sandbox/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "seed": state.settings.seed}

    @post("/_sandbox/reset", status_code=200, include_in_schema=False)
    async def reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}

    @post("/_sandbox/leads", include_in_schema=False)
    async def create_sandbox_lead(data: CreateSandboxLead) -> Response[Any]:
        person: Person | None = None
        try:
            if data.person_index is not None:
                person = people.person(data.person_index)
            elif data.cpf is not None:
                person = people.by_cpf(data.cpf)
        except (ValueError, InvalidInput) as exc:
            return _json(msgspec.json.encode({"error": str(exc)}), 400)
        customer: dict[str, str | None] = _person_customer(person) if person is not None else {}
        extra = data.customer or {}
        unknown = set(extra) - _CUSTOMER_KEYS
        if unknown:
            return _json(
                msgspec.json.encode({"error": f"unknown customer keys: {sorted(unknown)}"}), 400
            )
        customer.update(extra)
        if person is not None:
            people.register(person)
        lead_id = data.lead_id or state.new_lead_id()
        internal_id = data.person_index if data.person_index is not None else _internal_id(lead_id)
        state.store_lead(
            lead_id,
            _encode_lead(lead_id, internal_id, customer, data.description, data.product_ref),
        )
        return _json(
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

    @get("/_sandbox/leads/{lead_id:str}/messages", include_in_schema=False)
    async def lead_messages(lead_id: str) -> Response[Any]:
        if state.lead_body(lead_id) is None:
            return _json(msgspec.json.encode({"error": "unknown lead"}), 404)
        messages = state.messages.get(lead_id, [])
        return _json(msgspec.json.encode({"lead_id": lead_id, "messages": messages}))

    @get("/_sandbox/people/{index:int}", include_in_schema=False)
    async def person_summary(index: int) -> Response[Any]:
        if index < 0:
            return _json(msgspec.json.encode({"error": "index must be >= 0"}), 400)
        p = people.person(index)
        return _json(
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

    def unknown_upstream() -> Response[Any]:
        body = {"error": f"unknown upstream, use one of {list(UPSTREAMS)}"}
        return _json(msgspec.json.encode(body), 404)

    @get("/_sandbox/faults", include_in_schema=False)
    async def get_all_faults() -> Response[Any]:
        return _json(msgspec.json.encode(state.faults.all()))

    @get("/_sandbox/faults/{upstream:str}", include_in_schema=False)
    async def get_faults(upstream: str) -> Response[Any]:
        name = _as_upstream(upstream)
        if name is None:
            return unknown_upstream()
        return _json(msgspec.json.encode(state.faults.get(name)))

    @post("/_sandbox/faults/{upstream:str}", status_code=200, include_in_schema=False)
    async def set_faults(request: Request[Any, Any, Any], upstream: str) -> Response[Any]:
        name = _as_upstream(upstream)
        if name is None:
            return unknown_upstream()
        raw = await request.body()
        try:
            config = msgspec.json.decode(raw or b"{}", type=FaultConfig)
        except msgspec.DecodeError as exc:
            return _json(msgspec.json.encode({"error": str(exc)}), 400)
        state.faults.set(name, config)
        return _json(msgspec.json.encode(config))

    @delete("/_sandbox/faults", include_in_schema=False)
    async def reset_faults() -> None:
        for name in UPSTREAMS:
            state.faults.set(name, NO_FAULTS)

    @get("/_sandbox/counters", include_in_schema=False)
    async def get_counters() -> Response[Any]:
        return _json(msgspec.json.encode(state.counters.snapshot()))

    @delete("/_sandbox/counters", include_in_schema=False)
    async def reset_counters() -> None:
        state.counters.reset()

    def warm_up() -> None:
        # Build the Diretrix contact registry before serving, so no request pays for it.
        people.warm_up()

    app = Litestar(
        route_handlers=[
            c2s_get_lead,
            c2s_create_message,
            c2s_create_lead,
            diretrix_by_phone,
            diretrix_by_email,
            diretrix_person,
            work_api,
            health,
            reset,
            create_sandbox_lead,
            lead_messages,
            person_summary,
            get_all_faults,
            get_faults,
            set_faults,
            reset_faults,
            get_counters,
            reset_counters,
        ],
        on_startup=[warm_up],
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.state.sandbox = state
    return app


def run_sandbox(port: int, host: str = "127.0.0.1", *, seed: int | None = None) -> None:
    """Serve the sandbox in the foreground with Granian (one worker) until SIGINT/SIGTERM.

    Args:
        port: Listen port.
        host: Listen address (loopback by default: the sandbox is for local use).
        seed: Seed of the synthetic people (default ``SANDBOX_SEED`` or 20251122).
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    # The worker process builds the app from the environment; pass our choices through it.
    os.environ["SANDBOX_PORT"] = str(port)
    if seed is not None:
        os.environ["SANDBOX_SEED"] = str(seed)
    server = Granian(
        "infra.sandbox.app:create_sandbox_app",
        factory=True,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        address=host,
        port=port,
        workers=1,
        # Hanging requests (timeout faults) must not hold shutdown for minutes.
        workers_kill_timeout=3,
        log_access=False,
    )
    server.serve()


if __name__ == "__main__":
    run_sandbox(int(os.environ.get("SANDBOX_PORT", _DEFAULT_PORT)))
