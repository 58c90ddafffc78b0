"""Slow bodies against the real app under Granian, with the Dockerfile's Granian limits.

Hundreds of unauthenticated connections send their headers and one byte of a 1,000-byte body to
the C2S webhook, then stall. Other clients (a health probe, an authenticated read) must still be
served within a second; the stalled ones get 408 after ``BODY_READ_TIMEOUT_S`` (those holding a
pending-body slot) or 503 with ``Retry-After`` at once (the rest), and the server closes every one
of the shed connections. A client that hangs up mid-body is a 499 in ``/metrics``, never a 500.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import selectors
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from app.cli.serve import (
    GRANIAN_BACKLOG,
    GRANIAN_BACKPRESSURE,
    GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS,
)
from tests.support.factories import issue_key
from tests.support.processes import granian_server

if TYPE_CHECKING:
    from collections.abc import Iterator

STALLED = 600  # more than Granian's backpressure: today's code would hold every request slot
BODY_READ_TIMEOUT_S = 4.0
MAX_PENDING_BODIES = 128  # the default
SERVED_WITHIN_S = 1.0
WEBHOOK = "/api/v1/webhooks/c2s"
_STALL_HEAD = (
    f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "Content-Length: 1000\r\n\r\n["
).encode()
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ")


@dataclass
class _Stalled:
    sock: socket.socket
    opened: float
    data: bytes = b""
    answered_at: float | None = None
    closed: bool = False
    status: int | None = None


@pytest.fixture
def many_files() -> None:
    """Room for the stalled sockets in this process and the server (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * STALLED + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@pytest.fixture
def app_url(base_env: dict[str, str], many_files: None) -> Iterator[str]:
    env = {
        **os.environ,
        **base_env,
        "OTEL_SDK_DISABLED": "true",
        "BODY_READ_TIMEOUT_S": str(BODY_READ_TIMEOUT_S),
        "MAX_PENDING_BODIES": str(MAX_PENDING_BODIES),
    }
    with granian_server(
        "app.main:create_app",
        env=env,
        ready_path="/health",
        start_timeout_s=60.0,
        extra_args=[
            "--backpressure",
            str(GRANIAN_BACKPRESSURE),
            "--backlog",
            str(GRANIAN_BACKLOG),
            "--http1-header-read-timeout",
            str(GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS),
        ],
    ) as url:
        yield url


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, float]:
    """``(status, seconds)`` of one GET on a fresh connection, bounded by SERVED_WITHIN_S."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SERVED_WITHIN_S)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


class _Attack:
    """The stalled sockets, read without blocking as the server answers and closes them."""

    def __init__(self) -> None:
        self.stalled: list[_Stalled] = []
        self._selector = selectors.DefaultSelector()

    def open(self, port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(_STALL_HEAD)
        sock.setblocking(False)
        entry = _Stalled(sock, time.monotonic())
        self.stalled.append(entry)
        self._selector.register(sock, selectors.EVENT_READ, entry)

    def answered(self) -> int:
        return sum(1 for entry in self.stalled if entry.answered_at is not None)

    def read(self, until: float, answered: int | None = None) -> None:
        """Read until ``answered`` sockets got an answer (default: all closed) or ``until``."""
        while time.monotonic() < until and self._selector.get_map():
            if answered is not None and self.answered() >= answered:
                return
            for key, _ in self._selector.select(timeout=0.05):
                entry: _Stalled = key.data
                try:
                    chunk = entry.sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    if entry.answered_at is None:
                        entry.answered_at = time.monotonic()
                    entry.data += chunk
                    continue
                entry.closed = True
                self._selector.unregister(entry.sock)
        for entry in self.stalled:
            match = _STATUS_LINE.match(entry.data)
            entry.status = int(match[1]) if match else None

    def close(self) -> None:
        self._selector.close()
        for entry in self.stalled:
            with contextlib.suppress(OSError):
                entry.sock.close()


def _metric(text: str, status: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("http_server_request_duration_seconds_count{")
            and f'http_route="{WEBHOOK}"' in line
            and f'http_response_status_code="{status}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_stalled_bodies_do_not_take_the_api_down(app_url: str, database_url: str) -> None:
    port = urlsplit(app_url).port or 80
    key, _ = await issue_key(database_url, tenant="slow", scopes="read", name="slow-bodies")
    auth = {"X-API-Key": key}

    attack = _Attack()
    try:
        for _ in range(STALLED):
            attack.open(port)
        attack_sent = time.monotonic()
        # The server dispatches them all: MAX_PENDING_BODIES fill the pending-body slots, the
        # rest are shed at once (on today's code nothing answers and every request slot is held).
        attack.read(until=attack_sent + 5.0, answered=STALLED - MAX_PENDING_BODIES)

        # Legitimate clients are served while the stalled bodies are still pending.
        health, health_s = _get(port, "/health")
        customer, customer_s = _get(port, f"/api/v1/customers/{uuid.uuid4()}", auth)
        assert time.monotonic() < attack_sent + BODY_READ_TIMEOUT_S
        assert health == 200
        assert health_s < SERVED_WITHIN_S
        assert customer == 404  # authenticated, looked up, not found
        assert customer_s < SERVED_WITHIN_S

        attack.read(until=attack_sent + BODY_READ_TIMEOUT_S + 8.0)
    finally:
        attack.close()
    stalled = attack.stalled

    statuses = [entry.status for entry in stalled]
    timed_out = [entry for entry in stalled if entry.status == 408]
    shed = [entry for entry in stalled if entry.status == 503]
    assert len(timed_out) + len(shed) == STALLED, sorted(set(statuses), key=str)
    assert 0 < len(timed_out) <= MAX_PENDING_BODIES
    for entry in timed_out:
        assert entry.answered_at is not None
        waited = entry.answered_at - entry.opened
        assert BODY_READ_TIMEOUT_S - 0.1 <= waited <= BODY_READ_TIMEOUT_S + 5.0
        assert b"application/problem+json" in entry.data
    for entry in shed:
        assert b"\r\nretry-after: 1\r\n" in entry.data.lower()
    # Every answer says Connection: close; the shed connections are closed by the server at
    # once. (Granian keeps some timed-out connections open until the client leaves: see
    # docs/security.md, "Slow bodies".)
    assert all(b"\r\nconnection: close\r\n" in entry.data.lower() for entry in stalled)
    assert all(entry.closed for entry in shed)

    # After the attack the webhook works again.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", WEBHOOK, body=b"[]", headers={"Content-Type": "application/json"})
        assert conn.getresponse().status < 500
    finally:
        conn.close()


def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_500(app_url: str) -> None:
    port = urlsplit(app_url).port or 80

    def scrape() -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    before = scrape()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_STALL_HEAD)
            time.sleep(0.2)  # the app is reading the body when the client leaves
    deadline = time.monotonic() + 5
    after = scrape()
    while _metric(after, "499") - _metric(before, "499") < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        after = scrape()
    assert _metric(after, "499") - _metric(before, "499") == 5
    assert _metric(after, "500") == _metric(before, "500")
