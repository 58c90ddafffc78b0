"""The queue tests' world: Helena's golden dossier behind in-memory upstreams, her webhook
event, and a Diretrix that holds a job in flight until released."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from domain.models import CpfCandidate
from domain.webhooks import parse_webhook_body
from tests.support.fakes import FakeDiretrix, World
from tests.support.processes import ROOT

if TYPE_CHECKING:
    import uuid

    from infra.db.events import PgEventStore

__all__ = [
    "APPLICATION_NAME",
    "EMAIL",
    "HELENA",
    "HELENA_CPF",
    "LEAD_ID",
    "BlockingDiretrix",
    "accept_one",
    "helena_world",
]

# The queue tests' pool connects under this name, so a test can terminate its connections and
# nobody else's.
APPLICATION_NAME = "c2s-queue-tests"
GOLDEN = ROOT / "tests" / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"
EMAIL = "helena@example.com"


def helena_world() -> World:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA M DUARTE", cpf=HELENA_CPF)]
    world.diretrix.by_email[EMAIL] = [CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)]
    return world


async def accept_one(store: PgEventStore, lead_id: str = LEAD_ID) -> uuid.UUID:
    document = {
        "id": lead_id,
        "attributes": {
            "updated_at": "2025-11-26T10:00:00Z",
            "customer": {
                "name": "Helena Marques Duarte",
                "phone": "+5511987654321",
                "email": EMAIL,
            },
        },
    }
    [event_id] = (await store.accept(parse_webhook_body(msgspec.json.encode(document)).events)).ids
    return event_id


class BlockingDiretrix(FakeDiretrix):
    """Diretrix that never answers until released (a job stuck in flight)."""

    def __init__(self, inner: FakeDiretrix) -> None:
        super().__init__(by_phone=inner.by_phone, by_email=inner.by_email)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        self.entered.set()
        await self.release.wait()
        return await super().search_by_phone(national_phone)
