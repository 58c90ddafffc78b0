"""What the sandbox remembers: stored leads, posted messages, faults, counters, people.

One :class:`SandboxState` per app, passed explicitly to every route group. The sandbox runs as a
single worker, so this is process memory (bounded).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

from infra.sandbox.faults import CallCounters, Faults
from infra.sandbox.people import LruBytes, SyntheticPeople

if TYPE_CHECKING:
    from infra.sandbox.people import Person
    from infra.sandbox.settings import SandboxSettings

__all__ = [
    "SandboxConfig",
    "SandboxState",
    "encode_lead",
    "lead_internal_id",
    "person_customer",
]

_MAX_STORED_LEADS = 100_000
_MAX_LEADS_WITH_MESSAGES = 100_000
_MAX_MESSAGES_PER_LEAD = 100
_TZ = dt.timezone(dt.timedelta(hours=-3))  # C2S timestamps are in Brasília time
_STARTED = dt.datetime(2025, 11, 20, 9, 30, tzinfo=_TZ)


class _Lead:
    """A stored lead and its encoded C2S representation."""

    __slots__ = ("body", "lead_id")

    def __init__(self, lead_id: str, body: bytes) -> None:
        self.lead_id = lead_id
        self.body = body


class SandboxConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Behaviour knobs of the simulated C2S (``POST /_sandbox/config``; reset clears them).

    Attributes:
        update_webhook_url: When set, every message C2S receives makes it fire an
            ``on_update_lead`` webhook for that lead at this URL (as the real C2S can: a new
            message updates the lead), with the lead's customer and a fresh ``updated_at``.
        update_webhook_token: Sent as ``X-Webhook-Token`` with those webhooks.
    """

    update_webhook_url: str | None = None
    update_webhook_token: str | None = None


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
        # Part of every created lead id: ids stay unique across sandbox restarts (a database
        # that outlived the sandbox already holds the ids of the previous run).
        self._run = secrets.token_hex(8)
        self.config = SandboxConfig()
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
        self.config = SandboxConfig()

    def new_lead_id(self) -> str:
        """A fresh 32-hex lead id, unique per sandbox process and creation order."""
        with self._lock:
            self._created += 1
            n = self._created
        return hashlib.blake2b(
            f"created:{self.settings.seed}:{self._run}:{n}".encode(), digest_size=16
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
        body = encode_lead(lead_id, index, person_customer(person), None, None)
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


def lead_internal_id(lead_id: str) -> int:
    """C2S's numeric ``internal_id`` of a stored lead (stable for its id)."""
    digest = hashlib.blake2b(lead_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 10_000_000


def person_customer(person: Person) -> dict[str, str | None]:
    return {
        "id": f"cus_{person.cpf[:9]}",
        "name": person.name.title(),
        "email": person.email,
        "phone": person.mobile_e164,
        "phone2": None,
    }


def encode_lead(
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
