"""The C2S webhook intake service (:class:`domain.webhooks.WebhookIntake`) over the in-memory
event store."""

from __future__ import annotations

import pytest

from domain.errors import DependencyUnavailable, InvalidInput
from domain.webhooks import WebhookIntake
from tests.support.fakes import FakeEventStore

LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"


def event(lead_id: object = LEAD_ID, updated_at: object = "2025-11-26T10:00:00Z") -> object:
    return {
        "id": lead_id,
        "hook_action": "on_create_lead",
        "attributes": {"updated_at": updated_at, "customer": {"name": "Helena"}},
    }


async def test_valid_events_are_stored_each_with_its_job() -> None:
    store = FakeEventStore()
    intake = WebhookIntake(store, max_events=10)
    result = await intake.accept([event(), event(updated_at="2025-11-26T11:00:00Z")])
    assert result.outcome == "accepted"
    assert (result.received, result.processed, result.duplicates) == (2, 2, 0)
    assert result.rejected == []
    assert len(store.rows) == 2
    assert len(store.jobs) == 2


async def test_a_redelivery_counts_as_duplicates_and_stores_nothing_new() -> None:
    store = FakeEventStore()
    intake = WebhookIntake(store, max_events=10)
    await intake.accept(event())
    again = await intake.accept(event())
    assert (again.outcome, again.received, again.processed, again.duplicates) == (
        "accepted",
        1,
        0,
        1,
    )
    assert len(store.jobs) == 1


async def test_invalid_events_are_rejected_one_by_one_and_the_valid_ones_stored() -> None:
    store = FakeEventStore()
    intake = WebhookIntake(store, max_events=10)
    result = await intake.accept([event(), event(updated_at="yesterday"), 7])
    assert result.outcome == "accepted"
    assert (result.received, result.processed, result.duplicates) == (3, 1, 0)
    assert [(r.index, r.field) for r in result.rejected] == [
        (1, "[1].attributes.updated_at"),
        (2, "[2]"),
    ]
    assert len(store.rows) == 1


async def test_a_body_without_any_valid_event_stores_nothing() -> None:
    store = FakeEventStore()
    intake = WebhookIntake(store, max_events=10)
    result = await intake.accept([event(lead_id="../x"), event(updated_at=None)])
    assert result.outcome == "nothing_valid"
    assert result.received == 2
    assert [r.field for r in result.rejected] == ["[0].id", "[1].attributes.updated_at"]
    assert store.rows == {}


async def test_a_body_over_the_event_limit_is_refused_before_parsing_or_storing() -> None:
    store = FakeEventStore()
    intake = WebhookIntake(store, max_events=2)
    result = await intake.accept([event(), "not even an event", event()])
    assert result.outcome == "too_many_events"
    assert result.received == 3
    assert (result.processed, result.duplicates, result.rejected) == (0, 0, [])
    assert store.rows == {}


async def test_exactly_the_event_limit_is_accepted() -> None:
    intake = WebhookIntake(FakeEventStore(), max_events=1)
    result = await intake.accept(event())
    assert (result.outcome, result.processed) == ("accepted", 1)


async def test_an_empty_array_is_accepted_with_nothing_to_store() -> None:
    store = FakeEventStore()
    result = await WebhookIntake(store, max_events=10).accept([])
    assert (result.outcome, result.received, result.processed) == ("accepted", 0, 0)


@pytest.mark.parametrize("document", ["text", 42, None, True])
async def test_a_body_that_is_neither_object_nor_array_names_the_body(document: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        await WebhookIntake(FakeEventStore(), max_events=10).accept(document)
    assert caught.value.field == "body"


async def test_an_unreachable_store_propagates_and_nothing_is_counted_as_stored() -> None:
    store = FakeEventStore(down=True)
    with pytest.raises(DependencyUnavailable):
        await WebhookIntake(store, max_events=10).accept(event())
    assert store.rows == {}
