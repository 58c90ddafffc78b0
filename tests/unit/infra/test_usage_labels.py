"""The tenant label of the usage metrics has a bounded set of values."""

from __future__ import annotations

from domain.usage import SYSTEM_TENANT
from infra.usage import OTHER_TENANTS, TenantLabels


def test_without_an_allowlist_the_first_tenants_seen_get_their_name() -> None:
    labels = TenantLabels(max_tenants=2)
    assert [labels.of(t) for t in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        OTHER_TENANTS,
        "a",
        OTHER_TENANTS,
        "b",
    ]
    assert labels.of(SYSTEM_TENANT) == SYSTEM_TENANT


def test_an_allowlist_names_only_its_tenants() -> None:
    labels = TenantLabels(allow=["big", "bigger"], max_tenants=50)
    assert [labels.of(t) for t in ("small", "big", "bigger", "tiny")] == [
        OTHER_TENANTS,
        "big",
        "bigger",
        OTHER_TENANTS,
    ]


def test_no_tenant_by_name_at_all() -> None:
    labels = TenantLabels(max_tenants=0)
    assert {labels.of(f"t{i}") for i in range(100)} == {OTHER_TENANTS}
