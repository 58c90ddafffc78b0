"""The worker traces jobs, not its own upkeep: an idle worker exports nothing, a job exports
its span tree (the consumer span and the queries and calls under it) and nothing else."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec
import pytest

from app.bootstrap import open_services
from infra.queue import ENTRYPOINT, EventConsumer
from observability.tracing import untraced
from tests.support.polling import wait_until
from tests.support.queue import accept_one, helena_world
from tests.support.tracing import exported, forget_exported, in_memory_tracing, roots

if TYPE_CHECKING:
    from collections.abc import Iterator

    import asyncpg
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.config import Settings
    from domain.pipeline import Enricher
    from infra.db.events import PgEventStore

pytestmark = pytest.mark.integration

# Every timer of the worker fires several times in this window: dequeue polls, queue samples
# and orphan sweeps (0.1 s), the flag poller (0.2 s); the breaker sync and the pool warm-up run
# at start-up.
IDLE_S = 1.5
FAST_S = 0.1


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    with in_memory_tracing(monkeypatch) as exporter:
        yield exporter


def _consumer(store: PgEventStore, pool: asyncpg.Pool, enricher: Enricher) -> EventConsumer:
    return EventConsumer(
        pool=pool,
        store=store,
        enricher=enricher,
        concurrency=1,
        poll_interval_s=FAST_S,
        sample_interval_s=FAST_S,
        sweep_interval_s=FAST_S,
    )


async def _stop(consumer: EventConsumer, task: asyncio.Task[None]) -> None:
    consumer.stop()
    await asyncio.wait_for(task, 10)


async def test_an_idle_worker_exports_no_traces(
    pool: asyncpg.Pool, settings: Settings, memory: InMemorySpanExporter
) -> None:
    forget_exported(memory)  # whatever the fixtures did before
    fast_flags = msgspec.structs.replace(settings, flag_cache_ttl_s=0.2)
    async with open_services(fast_flags) as services:  # pool, flag poller, breaker sync
        consumer = _consumer(services.event_store, services.pool, services.enricher)
        task = asyncio.create_task(consumer.run())
        await asyncio.sleep(IDLE_S)
        await _stop(consumer, task)

    spans = exported(memory)
    assert [s.name for s in roots(spans)] == []
    assert spans == []


async def test_a_job_exports_its_span_tree_and_nothing_else(
    pool: asyncpg.Pool, settings: Settings, memory: InMemorySpanExporter
) -> None:
    async with open_services(settings) as services:
        store = services.event_store
        event_id = await accept_one(store)
        forget_exported(memory)  # the intake's own spans
        consumer = _consumer(store, services.pool, helena_world().enricher())
        task = asyncio.create_task(consumer.run())

        async def completed() -> bool:
            with untraced():  # the test's own polling is not the worker's
                row = await store.load(event_id)
            return row is not None and row.status == "completed"

        await wait_until(completed, 15, what="the job to complete")
        await asyncio.sleep(0.3)  # a few idle polls after the job, which must stay untraced
        await _stop(consumer, task)

    spans = exported(memory)
    (job,) = roots(spans)  # the job's trace is the only one
    assert job.name == f"{ENTRYPOINT} process"
    tree = _tree(job, spans)
    assert any(_is_postgres(s) for s in tree), "the job's queries are traced under its span"
    assert len(tree) == len(spans)


def _is_postgres(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "postgresql" in (attributes.get("db.system"), attributes.get("db.system.name"))


def _tree(root: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    assert root.context is not None
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    found, todo = [], [root]
    while todo:
        span = todo.pop()
        found.append(span)
        assert span.context is not None
        todo.extend(children.get(span.context.span_id, []))
    return found
