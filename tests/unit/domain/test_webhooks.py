"""Webhook intake and the durable webhook job, against in-memory fakes of their ports."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import DependencyUnavailable, InvalidInput, UpstreamError
from domain.flags import StaticFlags
from domain.models import CpfCandidate, NewLead
from domain.webhooks import (
    MESSAGES_DISABLED,
    SEND_OUTCOME_UNKNOWN,
    GoogleAdsColumn,
    GoogleAdsLead,
    GoogleAdsSettings,
    RetryPolicy,
    count_webhook_events,
    decode_stored_event,
    intake_google_lead,
    is_provably_unsent,
    parse_updated_at,
    parse_webhook_body,
    run_event_job,
    truncate_text,
)
from tests.support.fakes import FakeC2S, FakeClaims, FakeEventStore, World

if TYPE_CHECKING:
    from collections.abc import Callable


GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"
PHONE = "+5511987654321"
EMAIL = "helena@example.com"
UTC_10H = dt.datetime(2025, 11, 26, 10, 0, tzinfo=dt.UTC)
FAST = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=10.0)


def event_json(
    *,
    lead_id: object = LEAD_ID,
    updated_at: object = "2025-11-26T10:00:00Z",
    hook_action: object = "on_create_lead",
    phone: object = PHONE,
    email: object = EMAIL,
) -> dict[str, object]:
    """A C2S webhook event in the single-event shape (``docs/contract.md`` §1.9)."""
    return {
        "id": lead_id,
        "hook_action": hook_action,
        "attributes": {
            "updated_at": updated_at,
            "customer": {"name": "Helena Marques Duarte", "email": email, "phone": phone},
            "product": {"description": "Apartamento", "prop_ref": "REF-1"},
            "lead_status": {"alias": "novo"},
            "extra": {"anything": [1, 2, 3]},
        },
    }


def body(document: object) -> bytes:
    return msgspec.json.encode(document)


def helena_world() -> World:
    """A world where the lead's phone and e-mail both lead to Helena, whose dossier exists."""
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA M DUARTE", cpf=HELENA_CPF)]
    world.diretrix.by_email[EMAIL] = [CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)]
    return world


async def stored_event(store: FakeEventStore, **overrides: object) -> uuid.UUID:
    parsed = parse_webhook_body(body(event_json(**overrides)))
    result = await store.accept(parsed.events)
    [event_id] = result.ids
    return event_id


def mid_jitter() -> float:
    return 0.5


# --- updated_at ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-26T10:00:00Z",
        "2025-11-26T10:00:00.000Z",
        "2025-11-26t10:00:00z",
        "2025-11-26T07:00:00-03:00",
        "2025-11-26T13:30:00+03:30",
        "2025-11-26 10:00:00+00:00",
        "2025-11-26 07:00:00.000 -0300",
        "2025-11-26 07:00:00 -03:00",
        "2025-11-26 10:00:00.000 +0000",
        "2025-11-26 10:00:00.000",
        "2025-11-26 10:00:00",
        "  2025-11-26T10:00:00Z  ",
    ],
)
def test_updated_at_accepts_rfc3339_offset_and_naive_utc_forms(text: str) -> None:
    assert parse_updated_at(text) == UTC_10H
    assert parse_updated_at(text).tzinfo is dt.UTC


def test_updated_at_keeps_microseconds_and_truncates_nanoseconds() -> None:
    assert parse_updated_at("2025-11-26T10:00:00.123456789Z").microsecond == 123456
    assert parse_updated_at("2025-11-26 10:00:00.5").microsecond == 500000


def test_updated_at_clamps_a_leap_second_into_its_minute() -> None:
    value = parse_updated_at("2016-12-31T23:59:60Z")
    assert (value.second, value.microsecond) == (59, 999_999)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2025-11-26",
        "2025-13-01T00:00:00Z",
        "2025-02-30 10:00:00",
        "2025-11-26T25:00:00Z",
        "2025-11-26T10:00:00+24:00",
        "2025-11-26T10:00Z",
        "2025-11-26 10:00:00.000 +03",
        "1763200000",
        1763200000,
        None,
        ["2025-11-26T10:00:00Z"],
        "2025-11-26T10:00:00Z" + "0" * 80,
    ],
)
def test_updated_at_rejects_anything_else_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_updated_at(value)
    assert info.value.field == "updated_at"


@settings(max_examples=200, deadline=None)
@given(
    instant=st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2999, 12, 31),
        timezones=st.just(dt.UTC),
    ),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_every_accepted_format_round_trips_the_instant(
    instant: dt.datetime, offset_minutes: int
) -> None:
    local = instant.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    fraction = f"{local.microsecond:06d}"
    rfc3339 = local.isoformat()
    spaced = f"{local:%Y-%m-%d %H:%M:%S}.{fraction} {sign}{hours:02d}{minutes:02d}"
    naive = f"{instant:%Y-%m-%d %H:%M:%S}.{fraction}"
    for text in (rfc3339, spaced, naive):
        assert parse_updated_at(text) == instant


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.integers(), st.none(), st.floats()))
def test_updated_at_never_fails_other_than_by_invalid_input(value: object) -> None:
    try:
        parsed = parse_updated_at(value)
    except InvalidInput:
        return
    assert parsed.tzinfo is dt.UTC


# --- envelopes ----------------------------------------------------------------------------------


def test_single_event_object_is_parsed_with_its_customer_and_raw_json() -> None:
    parsed = parse_webhook_body(body(event_json()))
    assert parsed.rejected == []
    [event] = parsed.events
    assert event.lead_id == LEAD_ID
    assert event.updated_at == UTC_10H
    assert event.hook_action == "on_create_lead"
    assert event.customer.phone == PHONE
    assert event.customer.email == EMAIL
    assert event.product_ref == "REF-1"
    assert event.status == "novo"
    assert msgspec.json.decode(event.raw) == event_json()


def test_array_of_events_keeps_order_and_rejects_invalid_ones_individually() -> None:
    document = [
        event_json(lead_id="a1"),
        event_json(lead_id="b2", updated_at=None),
        event_json(lead_id="c3", updated_at="2025-11-26 07:00:00.000 -0300"),
        "not an event",
        {"hook_action": "on_update_lead", "attributes": {"updated_at": "2025-11-26T10:00:00Z"}},
    ]
    parsed = parse_webhook_body(body(document))
    assert [e.lead_id for e in parsed.events] == ["a1", "c3"]
    assert [(r.index, r.field) for r in parsed.rejected] == [
        (1, "[1].attributes.updated_at"),
        (3, "[3]"),
        (4, "[4].id"),
    ]
    assert parsed.total == 5


def test_ts_port_envelope_is_parsed_from_lead() -> None:
    document = {
        "hook_action": "on_update_lead",
        "lead": {
            "id": LEAD_ID,
            "internal_id": 42,
            "attributes": {
                "customer": {"name": "Helena", "phone": PHONE, "phone2": 11988887777},
                "seller": {"name": "Corretor"},
                "lead_source": {"name": "Portal"},
                "updated_at": "2025-11-26T07:00:00-03:00",
            },
        },
    }
    [event] = parse_webhook_body(body(document)).events
    assert event.lead_id == LEAD_ID
    assert event.internal_id == "42"
    assert event.hook_action == "on_update_lead"
    assert event.updated_at == UTC_10H
    assert event.customer.phone2 == "11988887777"
    assert event.seller_name == "Corretor"
    assert event.source == "Portal"
    assert decode_stored_event(event.raw) == event


def test_ts_envelope_without_updated_at_names_the_nested_field() -> None:
    parsed = parse_webhook_body(body({"hook_action": "on_create_lead", "lead": {"id": "x1"}}))
    assert [r.field for r in parsed.rejected] == ["lead.attributes.updated_at"]


@pytest.mark.parametrize("action", ["on_create_lead", "on_update_lead", "on_close_lead", None])
def test_known_or_absent_hook_actions_are_accepted(action: str | None) -> None:
    assert len(parse_webhook_body(body(event_json(hook_action=action))).events) == 1


@pytest.mark.parametrize("action", ["on_delete_lead", "", "ON_CREATE_LEAD", 1, ["on_create_lead"]])
def test_unknown_hook_action_rejects_the_event(action: object) -> None:
    parsed = parse_webhook_body(body(event_json(hook_action=action)))
    assert parsed.events == []
    assert [r.field for r in parsed.rejected] == ["hook_action"]


@pytest.mark.parametrize("lead_id", [None, "", "   ", "../admin", "a" * 65, "lead id", True])
def test_missing_or_unsafe_lead_id_rejects_the_event(lead_id: object) -> None:
    parsed = parse_webhook_body(body(event_json(lead_id=lead_id)))
    assert [r.field for r in parsed.rejected] == ["id"]


def test_numeric_lead_id_is_taken_as_text() -> None:
    [event] = parse_webhook_body(body(event_json(lead_id=123456))).events
    assert event.lead_id == "123456"


def test_customer_fields_are_tolerant_blank_is_absent_numbers_are_text() -> None:
    document = event_json(phone=11987654321, email="   ")
    document["attributes"]["customer"]["phone_global"] = "+5511900000000"  # type: ignore[index]
    [event] = parse_webhook_body(body(document)).events
    assert event.customer.phone == "11987654321"
    assert event.customer.email is None


def test_missing_customer_is_accepted_and_left_to_the_job() -> None:
    document = {"id": "x1", "attributes": {"updated_at": "2025-11-26T10:00:00Z"}}
    [event] = parse_webhook_body(body(document)).events
    assert event.customer.phone is None
    assert event.to_lead().id == "x1"


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe", b'{"id": '])
def test_a_body_that_is_not_json_names_the_body(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_webhook_body(raw)
    assert info.value.field == "body"


@pytest.mark.parametrize("raw", [b"42", b'"event"', b"null", b"true"])
def test_a_json_scalar_body_names_the_body(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_webhook_body(raw)
    assert info.value.field == "body"


def test_empty_array_has_no_events_and_nothing_rejected() -> None:
    parsed = parse_webhook_body(b"[]")
    assert (parsed.events, parsed.rejected, parsed.total) == ([], [], 0)


def test_rejection_reasons_never_echo_the_value() -> None:
    secret = "maria.silva@example.com 11987654321"
    parsed = parse_webhook_body(body(event_json(updated_at=secret, lead_id=secret)))
    for rejected in parsed.rejected:
        assert "maria" not in rejected.reason
        assert "987654321" not in rejected.reason


def test_stored_event_round_trips_to_the_same_lead() -> None:
    [event] = parse_webhook_body(body(event_json())).events
    lead = decode_stored_event(event.raw).to_lead()
    assert lead == event.to_lead()
    assert lead.updated_at == UTC_10H.isoformat()


def test_a_corrupt_stored_payload_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decode_stored_event(b"[1, 2]")
    with pytest.raises(InvalidInput):
        decode_stored_event(b"{")


# --- retry policy ---------------------------------------------------------------------------------


def test_backoff_doubles_with_full_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=5.0, max_delay_s=1800.0)
    assert [policy.delay(n, 0.0) for n in range(1, 6)] == [0.0] * 5
    assert [policy.delay(n, 0.999999) for n in range(1, 6)] == pytest.approx([5, 10, 20, 40, 80])
    assert policy.delay(100, 0.5) == pytest.approx(900.0)


def test_default_policy_retries_for_hours_not_seconds() -> None:
    # Today's policy gave up after 5 attempts in ~15-30 s; the budget is now >= 6 h.
    policy = RetryPolicy()
    assert policy.budget_s >= 6 * 3600
    assert (policy.base_delay_s, policy.max_delay_s) == (5.0, 1800.0)
    # Even with the longest backoff every time, the budget allows more than 5 attempts...
    elapsed, attempts = 0.0, 0
    while not policy.exhausted(attempts + 1, elapsed, policy.delay(attempts + 1, 0.999999)):
        attempts += 1
        elapsed += policy.delay(attempts, 0.999999)
    assert attempts > 10
    assert elapsed <= policy.budget_s
    # ... and a retry that would start after the budget is not scheduled.
    assert policy.exhausted(3, 6 * 3600 - 10, 11.0)
    assert not policy.exhausted(3, 6 * 3600 - 10, 9.0)


async def test_retry_budget_is_spent_by_time_then_the_event_is_a_dead_letter() -> None:
    world, store = helena_world(), FakeEventStore()
    world.diretrix.down = True
    event_id = await stored_event(store)
    received = store.rows[event_id].received_at
    policy = RetryPolicy(budget_s=3600.0, base_delay_s=5.0, max_delay_s=1800.0)

    async def run_at(offset_s: float) -> Any:
        return await run_event_job(
            event_id,
            events=store,
            enricher=world.enricher(),
            policy=policy,
            rand=mid_jitter,
            clock=lambda: received + dt.timedelta(seconds=offset_s),
        )

    assert (await run_at(10)).kind == "retry"
    assert (await run_at(1800)).kind == "retry"
    last = await run_at(3599)  # the next retry would start after the budget
    assert (last.kind, last.dead_letter) == ("failed", True)
    assert last.reason == "gave up after 3 attempts: diretrix unavailable"
    assert store.rows[event_id].dead_letter
    # A redrive restarts the budget from its own time.
    row = store.rows[event_id]
    row.status, row.attempts, row.redriven_at = "queued", 0, received + dt.timedelta(hours=5)
    assert (await run_at(5 * 3600 + 10)).kind == "retry"


async def test_permanent_failures_are_not_dead_letters() -> None:
    world, store = helena_world(), FakeEventStore()
    world.diretrix.by_phone.clear()
    world.diretrix.by_email.clear()
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert (outcome.kind, outcome.dead_letter) == ("failed", False)
    assert not store.rows[event_id].dead_letter


# --- the job --------------------------------------------------------------------------------------


async def test_job_enriches_sends_once_and_completes() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert outcome.kind == "completed"
    assert outcome.sent
    [message] = world.c2s.messages[LEAD_ID]
    assert "DADOS PESSOAIS" in message
    row = store.rows[event_id]
    assert row.status == "completed"
    assert row.attempts == 1
    assert row.send_intent_at is not None
    assert row.message_sent_at is not None
    assert len(world.repository.rows) == 1  # the dossier was stored


async def test_with_messages_switched_off_the_event_is_parked_not_completed() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    flags = StaticFlags({"send_c2s_messages": False})
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher(flags=flags))
    assert outcome.kind == "failed"
    assert outcome.reason == MESSAGES_DISABLED
    assert LEAD_ID not in world.c2s.messages
    row = store.rows[event_id]
    assert row.status == "failed"
    assert row.message_sent_at is None
    assert row.send_intent_at is None  # nothing was attempted: a re-run may send it
    assert len(world.repository.rows) == 1  # the dossier was still stored


async def test_rerun_after_completion_sends_nothing() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    enricher = world.enricher()
    await run_event_job(event_id, events=store, enricher=enricher)
    again = await run_event_job(event_id, events=store, enricher=enricher)
    assert again.kind == "skipped"
    assert again.reason == "event already completed"
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_a_sent_mark_without_completion_completes_without_sending() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    store.rows[event_id].send_intent_at = dt.datetime.now(dt.UTC)
    store.rows[event_id].message_sent_at = dt.datetime.now(dt.UTC)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert (outcome.kind, outcome.sent) == ("completed", False)
    assert store.rows[event_id].status == "completed"
    assert LEAD_ID not in world.c2s.messages


async def test_an_intent_without_sent_mark_is_failed_and_never_resent() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    # A previous attempt recorded its intent, then died before recording the send.
    store.rows[event_id].send_intent_at = dt.datetime.now(dt.UTC)
    store.rows[event_id].status = "processing"
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert outcome.kind == "failed"
    assert outcome.reason == SEND_OUTCOME_UNKNOWN
    assert store.rows[event_id].status == "failed"
    assert store.rows[event_id].error_message == SEND_OUTCOME_UNKNOWN
    assert LEAD_ID not in world.c2s.messages
    assert world.work_api.calls == []  # nothing re-done either


async def test_transient_failure_is_retried_with_backoff_then_dead_lettered() -> None:
    world, store = helena_world(), FakeEventStore()
    world.diretrix.down = True
    event_id = await stored_event(store)
    enricher = world.enricher()
    outcomes = [
        await run_event_job(event_id, events=store, enricher=enricher, policy=FAST, rand=mid_jitter)
        for _ in range(3)
    ]
    assert [o.kind for o in outcomes] == ["retry", "retry", "failed"]
    assert [o.retry_in_s for o in outcomes[:2]] == [0.5, 1.0]
    assert outcomes[0].reason == "diretrix unavailable"
    assert outcomes[2].dead_letter
    assert outcomes[2].reason == "gave up after 3 attempts: diretrix unavailable"
    row = store.rows[event_id]
    assert (row.status, row.attempts, row.error_message) == ("failed", 3, outcomes[2].reason)
    assert LEAD_ID not in world.c2s.messages


async def test_a_retry_that_succeeds_sends_exactly_once() -> None:
    world, store = helena_world(), FakeEventStore()
    world.work_api.down = True
    event_id = await stored_event(store)
    enricher = world.enricher()
    first = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert (first.kind, first.reason) == ("retry", "work_api unavailable")
    assert store.rows[event_id].status == "queued"
    world.work_api.down = False
    second = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert second.kind == "completed"
    assert len(world.c2s.messages[LEAD_ID]) == 1
    assert store.rows[event_id].error_message is None


async def test_no_cpf_fails_immediately_without_retry() -> None:
    world, store = World(), FakeEventStore()  # Diretrix knows nobody
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert outcome.kind == "failed"
    assert not outcome.dead_letter
    assert outcome.reason == "no CPF found for the lead's phone or e-mail"
    assert store.rows[event_id].attempts == 1
    assert LEAD_ID not in world.c2s.messages


async def test_a_lead_without_contacts_fails_immediately() -> None:
    world, store = World(), FakeEventStore()
    event_id = await stored_event(store, phone=None, email=None)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert outcome.kind == "failed"
    assert world.diretrix.calls == 0


async def test_a_work_api_soft_not_found_fails_immediately() -> None:
    world, store = helena_world(), FakeEventStore()
    world.work_api.dossiers = {}  # the fake answers a soft "not found"
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher(), policy=FAST)
    assert (outcome.kind, outcome.reason) == ("failed", "work_api soft error: not_found")


async def test_a_work_api_server_error_is_retried() -> None:
    world, store = helena_world(), FakeEventStore()
    world.work_api.failing = {HELENA_CPF}
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher(), policy=FAST)
    assert (outcome.kind, outcome.reason) == ("retry", "work_api error (HTTP 500)")


async def test_a_send_refused_with_a_retryable_status_is_retried_and_sent_once() -> None:
    world, store = helena_world(), FakeEventStore()
    world.c2s.fail_send = UpstreamError("c2s", "C2S answered 503", status=503)
    event_id = await stored_event(store)
    enricher = world.enricher()
    first = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert (first.kind, first.reason) == ("retry", "c2s error (HTTP 503)")
    assert store.rows[event_id].send_intent_at is None  # provably not sent: intent cleared
    world.c2s.fail_send = None
    second = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert second.kind == "completed"
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_a_send_rejected_as_a_client_error_fails_for_good() -> None:
    world, store = helena_world(), FakeEventStore()
    world.c2s.fail_send = UpstreamError("c2s", "C2S answered 422", status=422)
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher(), policy=FAST)
    assert (outcome.kind, outcome.reason) == ("failed", "c2s rejected the message (HTTP 422)")


async def test_a_send_that_timed_out_is_not_resent() -> None:
    world, store = helena_world(), FakeEventStore()
    world.c2s.fail_send = DependencyUnavailable("c2s", "timeout")
    event_id = await stored_event(store)
    enricher = world.enricher()
    outcome = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert (outcome.kind, outcome.reason) == ("failed", SEND_OUTCOME_UNKNOWN)
    world.c2s.fail_send = None
    again = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert again.kind == "skipped"
    assert LEAD_ID not in world.c2s.messages


async def test_a_send_error_the_adapter_proves_unsent_is_retried() -> None:
    world, store = helena_world(), FakeEventStore()
    world.c2s.fail_send = DependencyUnavailable("c2s", "breaker open")
    event_id = await stored_event(store)
    outcome = await run_event_job(
        event_id,
        events=store,
        enricher=world.enricher(),
        policy=FAST,
        provably_unsent=lambda exc: isinstance(exc, DependencyUnavailable),
    )
    assert (outcome.kind, outcome.reason) == ("retry", "c2s unavailable")


class RacedStore(FakeEventStore):
    """Another run (whose lease expired while it was alive) records its intent first."""

    async def mark_send_intent(self, event_id: uuid.UUID) -> bool:
        await super().mark_send_intent(event_id)
        return await super().mark_send_intent(event_id)


async def test_a_concurrent_run_that_lost_the_send_intent_does_nothing() -> None:
    world, store = helena_world(), RacedStore()
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert (outcome.kind, outcome.reason) == ("skipped", "another attempt owns the send")
    assert LEAD_ID not in world.c2s.messages


async def test_a_repeatedly_interrupted_event_is_dead_lettered_before_any_work() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    store.rows[event_id].attempts = FAST.max_attempts  # each crashed run counted its claim
    store.rows[event_id].status = "processing"
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher(), policy=FAST)
    assert outcome.kind == "failed"
    assert outcome.dead_letter
    assert world.diretrix.calls == 0


async def test_an_unknown_event_is_skipped() -> None:
    world, store = helena_world(), FakeEventStore()
    outcome = await run_event_job(uuid.uuid4(), events=store, enricher=world.enricher())
    assert (outcome.kind, outcome.reason) == ("skipped", "event not found")


async def test_an_unreachable_store_propagates_for_the_queue_to_retry() -> None:
    world, store = helena_world(), FakeEventStore()
    event_id = await stored_event(store)
    store.down = True
    with pytest.raises(DependencyUnavailable):
        await run_event_job(event_id, events=store, enricher=world.enricher())


class SlowC2S(FakeC2S):
    """A C2S whose send waits until released, to cancel the job in the middle of it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send_message(self, lead_id: str, body: str) -> None:
        self.entered.set()
        await self.release.wait()
        await super().send_message(lead_id, body)


async def test_cancelling_the_job_mid_send_lets_the_send_finish_and_be_recorded() -> None:
    world, store = helena_world(), FakeEventStore()
    world.c2s = SlowC2S()
    event_id = await stored_event(store)
    job = asyncio.create_task(run_event_job(event_id, events=store, enricher=world.enricher()))
    await asyncio.wait_for(world.c2s.entered.wait(), 5)
    job.cancel()
    await asyncio.sleep(0.01)
    assert not job.done()  # held until the in-flight send ends
    world.c2s.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(job, 5)
    assert len(world.c2s.messages[LEAD_ID]) == 1
    assert store.rows[event_id].status == "completed"


_PII = re.compile(r"\d{11}|helena|example\.com|39053344705", re.IGNORECASE)


def _diretrix_down(world: World) -> None:
    world.diretrix.down = True


def _work_api_down(world: World) -> None:
    world.work_api.down = True


def _unknown_cpf(world: World) -> None:
    world.work_api.dossiers = {}


def _send_refused(world: World) -> None:
    world.c2s.fail_send = UpstreamError("c2s", "C2S answered 500", status=500)


def _send_timed_out(world: World) -> None:
    world.c2s.fail_send = DependencyUnavailable("c2s", "timeout")


def _nobody_found(world: World) -> None:
    world.diretrix.by_phone = {}
    world.diretrix.by_email = {}


@pytest.mark.parametrize(
    "scenario",
    [_diretrix_down, _work_api_down, _unknown_cpf, _send_refused, _send_timed_out, _nobody_found],
)
async def test_recorded_reasons_carry_no_personal_data(
    scenario: Callable[[World], None],
) -> None:
    world, store = helena_world(), FakeEventStore()
    scenario(world)
    event_id = await stored_event(store)
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert outcome.reason is not None
    assert not _PII.search(outcome.reason), outcome.reason
    assert not _PII.search(store.rows[event_id].error_message or "")


def test_only_http_error_answers_prove_a_send_did_not_happen() -> None:
    assert is_provably_unsent(UpstreamError("c2s", "x", status=500))
    assert is_provably_unsent(UpstreamError("c2s", "x", status=404))
    assert not is_provably_unsent(UpstreamError("c2s", "garbage after 2xx", status=None))
    assert not is_provably_unsent(UpstreamError("c2s", "weird 2xx", status=200))
    assert not is_provably_unsent(DependencyUnavailable("c2s", "timeout"))
    assert not is_provably_unsent(RuntimeError("bug"))


# --- Google Ads -----------------------------------------------------------------------------------


class FailingCreate(FakeC2S):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    async def create_lead(self, lead: NewLead) -> str:
        if self.error is not None:
            raise self.error
        return await super().create_lead(lead)


def google_lead(
    lead_id: str = "g-1", phone: str = "(11) 98765-4321", email: str = EMAIL
) -> GoogleAdsLead:
    return GoogleAdsLead(
        lead_id=lead_id,
        user_column_data=[
            GoogleAdsColumn(column_id="FULL_NAME", column_name="Nome", string_value="Helena"),
            GoogleAdsColumn(column_id="PHONE_NUMBER", column_name="Telefone", string_value=phone),
            GoogleAdsColumn(column_id="EMAIL", column_name="E-mail", string_value=email),
        ],
        form_id=123,
        campaign_id="456",
    )


SETTINGS = GoogleAdsSettings(description_max_length=5000, default_seller_id="s-1")


async def test_google_lead_is_enriched_created_once_and_deduplicated() -> None:
    world, claims = helena_world(), FakeClaims()
    enricher = world.enricher()
    first = await intake_google_lead(
        google_lead(), b"{}", claims=claims, enricher=enricher, settings=SETTINGS
    )
    second = await intake_google_lead(
        google_lead(), b"{}", claims=claims, enricher=enricher, settings=SETTINGS
    )
    assert first.success
    assert first.c2s_lead_id
    assert first.message == "Lead created in C2S"
    assert second.message == "Lead already processed (duplicate)"
    assert second.c2s_lead_id == first.c2s_lead_id
    [created] = world.c2s.created
    assert (created.phone, created.email, created.seller_id) == (PHONE, EMAIL, "s-1")
    assert created.source == "Google Ads"
    assert "DADOS PESSOAIS" in created.description
    assert "Formulário: 123 | Campanha: 456" in created.description


async def test_google_lead_is_created_even_when_enrichment_fails() -> None:
    world, claims = helena_world(), FakeClaims()
    world.diretrix.down = True
    result = await intake_google_lead(
        google_lead(), b"{}", claims=claims, enricher=world.enricher(), settings=SETTINGS
    )
    assert result.success
    [created] = world.c2s.created
    assert "DADOS PESSOAIS" not in created.description


async def test_google_lead_drops_an_invalid_contact_and_needs_one_valid() -> None:
    world, claims = World(), FakeClaims()
    result = await intake_google_lead(
        google_lead(phone="123"), b"{}", claims=claims, enricher=world.enricher(), settings=SETTINGS
    )
    assert result.success
    assert world.c2s.created[0].phone is None
    with pytest.raises(InvalidInput) as info:
        await intake_google_lead(
            google_lead("g-2", phone="123", email="nope"),
            b"{}",
            claims=claims,
            enricher=world.enricher(),
            settings=SETTINGS,
        )
    assert info.value.field == "user_column_data"
    assert "g-2" not in claims.rows


async def test_google_description_is_truncated_on_a_character_boundary() -> None:
    world, claims = World(), FakeClaims()
    long_lead = GoogleAdsLead(
        lead_id="g-3",
        user_column_data=[
            GoogleAdsColumn(column_id="EMAIL", string_value=EMAIL),
            GoogleAdsColumn(column_name="Mensagem", string_value="ção😀" * 1000),
        ],
    )
    await intake_google_lead(
        long_lead,
        b"{}",
        claims=claims,
        enricher=world.enricher(),
        settings=GoogleAdsSettings(description_max_length=100),
    )
    description = world.c2s.created[0].description
    assert len(description) <= 100
    assert description.endswith("…")
    description.encode("utf-8")  # valid UTF-8, no split code point


def test_truncate_text_bounds() -> None:
    assert truncate_text("abc", 5) == "abc"
    assert truncate_text("abcdef", 4) == "abc…"
    assert truncate_text("abcdef", 1) == "a"


async def test_google_create_refused_by_c2s_releases_the_claim_for_a_redelivery() -> None:
    world, claims = World(), FakeClaims()
    failing = FailingCreate(UpstreamError("c2s", "C2S answered 500", status=500))
    world.c2s = failing
    with pytest.raises(UpstreamError):
        await intake_google_lead(
            google_lead(), b"{}", claims=claims, enricher=world.enricher(), settings=SETTINGS
        )
    assert claims.rows == {}
    failing.error = None
    result = await intake_google_lead(
        google_lead(), b"{}", claims=claims, enricher=world.enricher(), settings=SETTINGS
    )
    assert result.message == "Lead created in C2S"


async def test_google_create_with_unknown_outcome_is_never_retried() -> None:
    world, claims = World(), FakeClaims()
    failing = FailingCreate(DependencyUnavailable("c2s", "timeout"))
    world.c2s = failing
    with pytest.raises(DependencyUnavailable):
        await intake_google_lead(
            google_lead(), b"{}", claims=claims, enricher=world.enricher(), settings=SETTINGS
        )
    assert claims.rows["g-1"][0] == "failed"
    failing.error = None
    again = await intake_google_lead(
        google_lead(), b"{}", claims=claims, enricher=world.enricher(), settings=SETTINGS
    )
    assert again.message == "Lead already processed (duplicate)"
    assert failing.created == []


def test_events_are_counted_without_being_validated() -> None:
    assert count_webhook_events({"id": "x"}) == 1
    assert count_webhook_events([{"id": "x"}, 5, None]) == 3
    assert count_webhook_events([]) == 0
    assert count_webhook_events("not an event") == 0
