"""Which address a request is counted under (``app.http.middleware.ratelimit.ClientAddress``).

Behind proxies that append to ``X-Forwarded-For``, everything left of the last trusted hop was
written by the client: the address must be the right-most entry no trusted proxy wrote, so that
random left-most values cannot spread one client over many per-IP buckets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest

from app.http.middleware.ratelimit import ClientAddress

if TYPE_CHECKING:
    from litestar.types import Scope

FLY = ("172.16.0.0/12", "fdaa::/16")


def scope(peer: str | None, *headers: tuple[str, str]) -> Scope:
    raw: dict[str, Any] = {
        "client": (peer, 4321) if peer is not None else None,
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }
    return cast("Scope", raw)


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    address = ClientAddress(FLY)
    request = scope("203.0.113.9", ("X-Forwarded-For", "1.1.1.1"), ("Fly-Client-IP", "2.2.2.2"))
    assert address.of(request) == "203.0.113.9"


def test_a_spoofed_left_most_entry_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 9.9.9.9"; the proxy appended the address it saw.
    address = ClientAddress(FLY)
    request = scope("172.16.0.5", ("X-Forwarded-For", "9.9.9.9, 198.51.100.7"))
    assert address.of(request) == "198.51.100.7"


def test_random_left_most_values_do_not_change_the_client() -> None:
    address = ClientAddress(FLY)
    seen = {
        address.of(scope("172.16.0.5", ("X-Forwarded-For", f"10.0.{i}.{i}, 198.51.100.7")))
        for i in range(50)
    }
    assert seen == {"198.51.100.7"}


def test_trusted_proxies_are_skipped_from_the_right() -> None:
    address = ClientAddress(FLY)
    request = scope(
        "172.16.0.5",
        ("X-Forwarded-For", "9.9.9.9, 198.51.100.7, 172.20.1.1, fdaa::3"),
    )
    assert address.of(request) == "198.51.100.7"


def test_several_forwarded_for_lines_are_one_list() -> None:
    address = ClientAddress(FLY)
    request = scope(
        "172.16.0.5",
        ("X-Forwarded-For", "9.9.9.9"),
        ("X-Forwarded-For", "198.51.100.7, 172.20.1.1"),
    )
    assert address.of(request) == "198.51.100.7"


def test_all_trusted_hops_give_the_left_most_of_them() -> None:
    address = ClientAddress(FLY)
    request = scope("172.16.0.5", ("X-Forwarded-For", "172.18.0.9, 172.20.1.1"))
    assert address.of(request) == "172.18.0.9"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("not-an-ip, 198.51.100.7", "198.51.100.7"),  # garbage left of the client: ignored
        ("198.51.100.7, not-an-ip", "172.16.0.5"),  # nothing a proxy could vouch for
        ("198.51.100.7, ", "198.51.100.7"),  # empty entries are skipped
        ("", "172.16.0.5"),
    ],
)
def test_unparsable_entries_end_the_walk(forwarded: str, expected: str) -> None:
    address = ClientAddress(FLY)
    assert address.of(scope("172.16.0.5", ("X-Forwarded-For", forwarded))) == expected


def test_fly_client_ip_is_believed_only_from_a_trusted_peer() -> None:
    address = ClientAddress(FLY)
    trusted = scope(
        "172.16.0.5", ("X-Forwarded-For", "9.9.9.9, 172.20.1.1"), ("Fly-Client-IP", "198.51.100.7")
    )
    assert address.of(trusted) == "198.51.100.7"
    untrusted = scope("203.0.113.9", ("Fly-Client-IP", "198.51.100.7"))
    assert address.of(untrusted) == "203.0.113.9"


def test_an_invalid_fly_client_ip_falls_back_to_forwarded_for() -> None:
    address = ClientAddress(FLY)
    request = scope(
        "172.16.0.5", ("Fly-Client-IP", "garbage"), ("X-Forwarded-For", "9.9.9.9, 198.51.100.7")
    )
    assert address.of(request) == "198.51.100.7"


def test_ipv6_addresses_are_normalised() -> None:
    address = ClientAddress(FLY)
    request = scope("fdaa::1", ("X-Forwarded-For", "2001:DB8:0:0::1"))
    assert address.of(request) == "2001:db8::1"


def test_no_trusted_proxies_means_the_peer() -> None:
    address = ClientAddress(())
    assert address.of(scope("127.0.0.1", ("X-Forwarded-For", "198.51.100.7"))) == "127.0.0.1"
    assert address.of(scope(None)) == "unknown"
