"""Paid calls are metered per tenant, key, UTC day and upstream, and a key's daily quota stops
them before the upstream is called; against the in-memory fakes (``FakeUsageMeter``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from domain.customers import CustomerQuery, lookup_batch, lookup_customer
from domain.errors import DependencyUnavailable, ErrorOutcome, InvalidInput, NotFound, QuotaExceeded
from domain.models import CpfCandidate, Lead, LeadCustomer
from domain.tenancy import Caller, caller_scope
from domain.usage import (
    SYSTEM_TENANT,
    UsageReports,
    parse_paid_quota,
    seconds_until_day_end,
    usage_period,
    utc_day,
)
from tests.support.factories import dossier_payload, encode, new_cpf
from tests.support.fakes import FakeUsageMeter, World

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
# 2027-01-15 08:00:00 UTC: 16 h to the end of the UTC day.
T0 = dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()
DAY = dt.date(2027, 1, 15)
NOW = dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC)


def metered_world(cpfs: int = 3) -> tuple[World, list[str]]:
    world = World(meter=FakeUsageMeter())
    world.clock.t = T0
    people = [new_cpf() for _ in range(cpfs)]
    world.work_api.dossiers = {cpf: encode(dossier_payload(cpf)) for cpf in people}
    return world, people


def key(quota: int | None, tenant: str = "acme", key_id: str = "k1") -> Caller:
    return Caller(tenant=tenant, key_id=key_id, paid_quota=quota)


async def test_a_key_at_its_quota_gets_quota_exceeded_and_the_work_api_is_not_called() -> None:
    world, (a, b, c) = metered_world()
    enricher = world.enricher()
    with caller_scope(key(2)):
        for cpf in (a, b):
            found = await lookup_customer(enricher, CustomerQuery(cpf=cpf), now=NOW)
            assert found.metadata.sources == ["work_api"]
        with pytest.raises(QuotaExceeded) as refused:
            await lookup_customer(enricher, CustomerQuery(cpf=c), now=NOW)
    assert world.work_api.calls == [a, b]
    assert refused.value.http_status == 429
    assert refused.value.retry_after == 16 * 3600
    assert world.meter is not None
    assert world.meter.counts == {(DAY, "acme", "k1", "work_api"): 2}
    assert world.meter.refusals == [("acme", "work_api")]


async def test_stored_and_cached_reads_are_free_and_keep_working_past_the_quota() -> None:
    world, (a, b, _) = metered_world()
    enricher = world.enricher()
    with caller_scope(key(1)):
        await lookup_customer(enricher, CustomerQuery(cpf=a), now=NOW)
        # Stored now: answered from the database, no paid call.
        again = await lookup_customer(enricher, CustomerQuery(cpf=a), now=NOW)
        assert again.metadata.sources == ["local_db"]
        # Cached (not stored): the dossier cache answers, no paid call.
        await world.dossier_cache.put(f"cpf:{b}", world.work_api.dossiers[b])
        dossier, _raw = await enricher.fetch_dossier(b, use_cache=True)
    assert dossier is not None
    assert world.work_api.calls == [a]
    assert world.meter is not None
    assert world.meter.counts == {(DAY, "acme", "k1", "work_api"): 1}


async def test_a_call_that_was_not_answered_gives_its_unit_back() -> None:
    world, (a, b, _) = metered_world()
    enricher = world.enricher()
    world.work_api.down = True
    with caller_scope(key(1)):
        with pytest.raises(DependencyUnavailable):
            await lookup_customer(enricher, CustomerQuery(cpf=a), now=NOW)
        world.work_api.down = False
        found = await lookup_customer(enricher, CustomerQuery(cpf=b), now=NOW)
    assert found.personal_info.cpf == b
    assert world.meter is not None
    assert world.meter.counts == {(DAY, "acme", "k1", "work_api"): 1}


async def test_a_work_api_not_found_is_an_answer_and_is_paid() -> None:
    world, _ = metered_world(0)
    with caller_scope(key(1)), pytest.raises(NotFound):
        await lookup_customer(world.enricher(), CustomerQuery(cpf=new_cpf()), now=NOW)
    assert world.meter is not None
    assert world.meter.counts == {(DAY, "acme", "k1", "work_api"): 1}


async def test_the_quota_counts_per_key_and_starts_again_the_next_utc_day() -> None:
    world, (a, b, c) = metered_world()
    enricher = world.enricher()
    with caller_scope(key(1)):
        await lookup_customer(enricher, CustomerQuery(cpf=a), now=NOW)
    with caller_scope(key(1, key_id="k2")):
        await lookup_customer(enricher, CustomerQuery(cpf=b), now=NOW)
    world.clock.advance(16 * 3600)
    with caller_scope(key(1)):
        await lookup_customer(enricher, CustomerQuery(cpf=c), now=NOW)
    assert world.work_api.calls == [a, b, c]
    assert world.meter is not None
    assert world.meter.counts == {
        (DAY, "acme", "k1", "work_api"): 1,
        (DAY, "acme", "k2", "work_api"): 1,
        (DAY + dt.timedelta(days=1), "acme", "k1", "work_api"): 1,
    }


async def test_a_batch_item_over_the_quota_is_an_item_error_not_a_batch_failure() -> None:
    world, people = metered_world()
    with caller_scope(key(2)):
        outcomes = await lookup_batch(
            world.enricher(), [CustomerQuery(cpf=cpf) for cpf in people], now=NOW, concurrency=1
        )
    assert [o.error is None for o in outcomes] == [True, True, False]
    assert outcomes[2].error == ErrorOutcome(
        status=429,
        detail="Daily paid-call quota of this API key exceeded; it resets at 00:00 UTC",
    )
    assert len(world.work_api.calls) == 2


async def test_diretrix_resolutions_are_paid_calls_too() -> None:
    world, (cpf, _, _) = metered_world()
    world.diretrix.by_email["ana@example.com"] = [CpfCandidate(cpf=cpf, name="FULANO DE TAL")]
    enricher = world.enricher()
    # The resolution takes the one unit: the dossier fetch is refused, Work API not called.
    with caller_scope(key(1)), pytest.raises(QuotaExceeded) as refused:
        await lookup_customer(enricher, CustomerQuery(email="ana@example.com"), now=NOW)
    assert refused.value.upstream == "work_api"
    assert world.diretrix.calls == 1
    assert world.work_api.calls == []
    assert world.meter is not None
    assert world.meter.counts == {(DAY, "acme", "k1", "diretrix"): 1}


async def test_a_lead_enrichment_over_the_quota_is_a_429_not_an_upstream_failure() -> None:
    world, (cpf, _, _) = metered_world()
    world.diretrix.by_email["ana@example.com"] = [CpfCandidate(cpf=cpf, name="FULANO DE TAL")]
    world.c2s.leads["L1"] = Lead(id="L1", customer=LeadCustomer(email="ana@example.com"))
    with caller_scope(key(1)), pytest.raises(QuotaExceeded):
        await world.enricher().enrich_lead("L1")
    assert world.work_api.calls == []
    assert world.c2s.messages == {}


async def test_work_for_no_key_is_counted_for_the_system_without_a_quota() -> None:
    world, people = metered_world()
    enricher = world.enricher()
    for cpf in people:
        await lookup_customer(enricher, CustomerQuery(cpf=cpf), now=NOW)
    assert world.meter is not None
    assert world.meter.counts == {(DAY, SYSTEM_TENANT, "", "work_api"): 3}


async def test_the_usage_report_is_the_tenants_own_with_totals() -> None:
    meter = FakeUsageMeter()
    world, _ = metered_world(0)
    d1, d2 = DAY, DAY + dt.timedelta(days=1)
    meter.counts = {
        (d1, "acme", "k1", "work_api"): 3,
        (d1, "acme", "k1", "diretrix"): 1,
        (d2, "acme", "k2", "work_api"): 2,
        (d2, "globex", "k9", "work_api"): 50,
        (dt.date(2026, 12, 31), "acme", "k1", "work_api"): 7,
    }
    reports = UsageReports(meter, meter, world.clock)
    report = await reports.report("acme", None, None)
    assert (report.from_, report.to) == (dt.date(2027, 1, 1), DAY)
    # Tomorrow is not in the default period; asking for it explicitly includes it.
    report = await reports.report("acme", "2027-01-01", "2027-01-31")
    assert report.total == 6
    assert report.by_upstream == {"diretrix": 1, "work_api": 5}
    assert report.by_key == {"k1": 4, "k2": 2}
    assert report.by_day == {"2027-01-15": 4, "2027-01-16": 2}
    assert [(r.day, r.key_id, r.upstream, r.calls) for r in report.rows] == [
        (d1, "k1", "diretrix", 1),
        (d1, "k1", "work_api", 3),
        (d2, "k2", "work_api", 2),
    ]


@pytest.mark.parametrize(
    ("raw_from", "raw_to", "expected"),
    [
        (None, None, (dt.date(2027, 1, 1), DAY)),
        ("2026-12-01", None, (dt.date(2026, 12, 1), DAY)),
        (None, "2026-12-10", (dt.date(2026, 12, 1), dt.date(2026, 12, 10))),
        ("2027-01-20", None, (dt.date(2027, 1, 20), dt.date(2027, 1, 20))),
        (" ", "", (dt.date(2027, 1, 1), DAY)),
    ],
)
def test_usage_period_defaults_to_the_current_utc_month(
    raw_from: str | None, raw_to: str | None, expected: tuple[dt.date, dt.date]
) -> None:
    assert usage_period(raw_from, raw_to, DAY) == expected


@pytest.mark.parametrize(
    ("raw_from", "raw_to", "field"),
    [
        ("2027-13-01", None, "from"),
        (None, "yesterday", "to"),
        ("2027-01-10", "2027-01-09", "from"),
        ("2025-01-01", "2027-01-01", "from"),
    ],
)
def test_a_bad_usage_period_names_its_field(
    raw_from: str | None, raw_to: str | None, field: str
) -> None:
    with pytest.raises(InvalidInput) as bad:
        usage_period(raw_from, raw_to, DAY)
    assert bad.value.field == field


def test_paid_quota_parsing() -> None:
    assert parse_paid_quota("none") is None
    assert parse_paid_quota(None) is None
    assert parse_paid_quota(" 25 ") == 25
    assert parse_paid_quota(0) == 0
    for bad in ("-1", "ten", "1.5", 10**9):
        with pytest.raises(InvalidInput):
            parse_paid_quota(bad)


def test_utc_day_and_seconds_to_its_end() -> None:
    assert utc_day(T0) == DAY
    assert seconds_until_day_end(T0) == 16 * 3600
    assert seconds_until_day_end(T0 + 16 * 3600 - 0.5) == 1.0


async def test_lead_processing_over_the_quota_is_a_429_and_the_lead_is_not_locked() -> None:
    world, (cpf, _, _) = metered_world()
    world.diretrix.by_email["ana@example.com"] = [CpfCandidate(cpf=cpf, name="FULANO DE TAL")]
    world.c2s.leads["L2"] = Lead(id="L2", customer=LeadCustomer(email="ana@example.com"))
    enricher = world.enricher()
    with caller_scope(key(1)), pytest.raises(QuotaExceeded):
        await enricher.process_lead("L2")
    assert world.work_api.calls == []
    assert world.lead_locks is not None
    assert world.lead_locks.held == {}
    # The next day (quota reset) the same lead is processed.
    world.clock.advance(16 * 3600)
    with caller_scope(key(1)):
        result = await enricher.process_lead("L2")
    assert result.success
    assert world.work_api.calls == [cpf]
