"""Signed callbacks of bulk jobs: the URL rule, the SSRF rule, the signature and the retries.

No I/O here: the delivery loop (``infra/callbacks.py``) and the store
(``infra/db/callbacks.py``) apply these rules; ``docs/callbacks.md`` is the receiver's side.

* :func:`validate_callback_url` decides whether a client may register a URL (``https`` only in
  production; plain ``http`` only to a loopback host in development and test; no credentials,
  no fragment, at most :data:`MAX_CALLBACK_URL_LENGTH` characters).
* :func:`is_public_address` is the SSRF rule: in production every address a callback host
  resolves to must pass it at delivery time (the connection then goes to the checked address,
  never to a second resolution).
* :func:`signature_header` signs a body: ``C2S-Signature: t=<unix>,v1=<hex>[,v1=<hex>]``, one
  ``v1=`` per valid secret of the key, newest first (``domain/signatures.py``).
* :func:`next_step` is the retry schedule: exponential backoff with full jitter
  (``domain.webhooks.retry.RetryPolicy``) for up to :data:`RETRY_WINDOW_S` after the first
  attempt, then ``failed``.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit
from uuid import UUID

import msgspec

from domain.errors import InvalidInput
from domain.signatures import sign_with
from domain.webhooks.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_RETRY_BASE_S",
    "DELIVERY_STATES",
    "MAX_CALLBACK_URL_LENGTH",
    "MAX_VALID_SECRETS",
    "RETRY_WINDOW_S",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "DeliveryState",
    "DeliveryView",
    "Step",
    "callback_retry_policy",
    "is_public_address",
    "new_callback_secret",
    "next_step",
    "signature_header",
    "validate_callback_url",
]

FIELD: Final = "callback_url"
MAX_CALLBACK_URL_LENGTH: Final = 2048
SIGNATURE_HEADER: Final = "C2S-Signature"
# A key has at most two valid callback secrets: the current one and the one being retired.
MAX_VALID_SECRETS: Final = 2
RETRY_WINDOW_S: Final = 24 * 3600.0
DEFAULT_RETRY_BASE_S: Final = 10.0
_MAX_RETRY_DELAY_S: Final = 3600.0
_MAX_ATTEMPTS: Final = 200

SECRET_PREFIX: Final = "c2scb_"  # noqa: S105 - a prefix, not a secret

DeliveryState = Literal["pending", "delivered", "failed"]
DELIVERY_STATES: Final[tuple[DeliveryState, ...]] = ("pending", "delivered", "failed")

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})

# Refused whatever ``ipaddress`` thinks of them (its flags moved between Python versions): the
# list is the rule, ``is_global`` only a second net.
_BLOCKED_V4: Final = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_BLOCKED_V6: Final = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 included)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local (Fly's private network fdaa::/16 included)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_V4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, compatible, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _V4_COMPATIBLE or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> bool:
    """Whether a callback may connect to ``ip`` in production (the SSRF rule).

    Refused: private, loopback, link-local (the cloud metadata endpoint 169.254.169.254),
    carrier-grade NAT, multicast, reserved, documentation and benchmarking ranges, ``0.0.0.0/8``,
    unique-local and site-local IPv6, and every IPv6 form that carries an IPv4 address (mapped
    ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, 6to4, NAT64) whose IPv4 address is refused.

    Args:
        ip: An address, or its text (an unparsable text is not public).
    """
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip in _NAT64_LOCAL or any(ip in net for net in _BLOCKED_V6):
            return False
        return ip.is_global and not ip.is_multicast
    if any(ip in net for net in _BLOCKED_V4):
        return False
    return ip.is_global and not ip.is_multicast


def _is_loopback_host(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_callback_url(url: str, *, environment: str) -> str:
    """Check a ``callback_url`` a client registers; return it unchanged.

    Production: ``https`` only, and a host that is not a refused address literal nor
    ``localhost`` (names are checked again, resolved, at every delivery). Development and test:
    ``https`` anywhere, or ``http`` to a loopback host (a local receiver).

    Args:
        url: The URL as sent.
        environment: ``Settings.environment`` (``production``, ``development``, ``test``).

    Raises:
        InvalidInput: ``callback_url`` and why (never the URL itself: it may carry secrets).
    """
    if not url or len(url) > MAX_CALLBACK_URL_LENGTH:
        raise InvalidInput(FIELD, f"callback_url must be 1 to {MAX_CALLBACK_URL_LENGTH} characters")
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidInput(FIELD, "callback_url must be an ASCII URL without spaces")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise InvalidInput(FIELD, "callback_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host:
        raise InvalidInput(FIELD, "callback_url must be an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInput(FIELD, "callback_url must not carry credentials")
    if parts.fragment or url.endswith("#"):
        raise InvalidInput(FIELD, "callback_url must not have a fragment")
    if environment == "production":
        if scheme != "https":
            raise InvalidInput(FIELD, "callback_url must use https")
        if _is_loopback_host(host):
            raise InvalidInput(FIELD, "callback_url must point to a public host")
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None and not is_public_address(literal):
            raise InvalidInput(FIELD, "callback_url must point to a public address")
    elif scheme == "http" and not _is_loopback_host(host):
        raise InvalidInput(FIELD, "callback_url must use https (http only to a loopback host)")
    return url


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``C2S-Signature`` value of ``body``: one ``v1=`` per valid secret, newest first.

    Following Stripe's practice while a secret is rolled: every valid secret signs, so a receiver
    configured with either the new or the previous secret verifies each delivery, and switches
    at its own pace before the previous one is retired.

    Args:
        secrets: The key's valid callback secrets, newest first (at most
            :data:`MAX_VALID_SECRETS`).
        timestamp: Unix seconds, sent as ``t=`` and signed.
        body: The exact bytes posted.
    """
    return sign_with(secrets[:MAX_VALID_SECRETS], timestamp, body)


def callback_retry_policy(base_delay_s: float = DEFAULT_RETRY_BASE_S) -> RetryPolicy:
    """The schedule of callback retries: the first cap ``base_delay_s`` (``CALLBACK_RETRY_BASE_S``),
    doubling per attempt up to one hour, full jitter, for :data:`RETRY_WINDOW_S` (24 h) after
    the first attempt."""
    return RetryPolicy(
        budget_s=RETRY_WINDOW_S,
        base_delay_s=base_delay_s,
        max_delay_s=_MAX_RETRY_DELAY_S,
        max_attempts=_MAX_ATTEMPTS,
    )


class Step(msgspec.Struct, frozen=True):
    """What becomes of a delivery after an attempt.

    Attributes:
        state: ``delivered``, ``pending`` (retry after ``delay_s``) or ``failed`` (given up).
        delay_s: Seconds until the next attempt (``pending`` only; 0 otherwise).
    """

    state: DeliveryState
    delay_s: float = 0.0


def next_step(
    *,
    delivered: bool,
    attempts: int,
    since_first_attempt_s: float,
    rand: float,
    policy: RetryPolicy,
) -> Step:
    """The delivery's state after attempt number ``attempts``.

    Args:
        delivered: The receiver answered 2xx.
        attempts: Attempts made so far, this one included (from 1).
        since_first_attempt_s: Seconds from the first attempt to the end of this one.
        rand: A number in [0, 1) (the jitter).
        policy: :func:`callback_retry_policy`.
    """
    if delivered:
        return Step("delivered")
    delay = policy.delay(attempts, rand)
    if policy.exhausted(attempts, max(since_first_attempt_s, 0.0), delay):
        return Step("failed")
    return Step("pending", delay)


def new_callback_secret() -> str:
    """A fresh callback signing secret: ``c2scb_`` and 256 random bits (URL-safe base64)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    """One callback delivery of a job as its owner may see it (no body, no secret).

    Attributes:
        id: The delivery's id (sent as ``C2S-Delivery-Id``: receivers deduplicate on it).
        job_id: The job it announces.
        url: Where it is posted.
        state: ``pending`` (not yet delivered, retried), ``delivered`` or ``failed``.
        attempts: Attempts made.
        last_status: HTTP status of the last answer, ``None`` when none came (timeout, refused).
        last_error: Why the last attempt failed (statuses and error classes only).
        next_attempt_at: When it is tried next (``pending`` only).
        created_at: When the job ended and the delivery was recorded.
        first_attempt_at: The first attempt (the 24 h retry window counts from it).
        last_attempt_at: The last attempt.
        delivered_at: The 2xx answer, if any.
        failed_at: When it was given up, if it was.
    """

    id: UUID
    job_id: UUID
    url: str
    state: DeliveryState
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
