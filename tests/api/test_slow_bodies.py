"""A client that hangs up mid-body, through the real app in-process (raw ASGI channels).

Not a server error: the request metrics record status 499 and nothing is logged at warning or
error level (the session's LOG_LEVEL is WARNING, so any such line would be printed).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from app.main import create_app
from observability.metrics import REGISTRY

if TYPE_CHECKING:
    from litestar.types import Message

    from app.config import Settings

pytestmark = pytest.mark.integration

WEBHOOK = "/api/v1/webhooks/c2s"


def _count(status: str) -> float:
    value = REGISTRY.get_sample_value(
        "http_server_request_duration_seconds_count",
        {"http_request_method": "POST", "http_route": WEBHOOK, "http_response_status_code": status},
    )
    return value or 0.0


async def test_a_client_that_hangs_up_mid_body_is_499_and_not_logged_as_an_error(
    settings: Settings,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # An app of its own whose lifespan runs on this test's loop (the session client's app lives
    # on the test client's loop).
    app = create_app(settings)
    inbox: list[Any] = [  # Any: ASGI receive events
        {"type": "http.request", "body": b"[", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Any:  # Any: an ASGI receive event
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": WEBHOOK,
        "raw_path": WEBHOOK.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("test", 80),
        "state": {},
    }
    before_499, before_500 = _count("499"), _count("500")
    async with app.lifespan():
        capfd.readouterr()
        await app(scope, receive, send)  # type: ignore[arg-type]
        out, err = capfd.readouterr()

    assert _count("499") == before_499 + 1, out[-3000:]
    assert _count("500") == before_500
    levels = []
    for line in (out + err).splitlines():
        try:
            levels.append(json.loads(line).get("level"))
        except ValueError:
            levels.append(line)
    assert not [level for level in levels if level in ("warning", "error", "critical")], out + err
    assert "500" not in (out + err)
