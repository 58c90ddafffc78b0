"""Small HTTP servers run in a thread by tests: an OTLP/HTTP trace receiver, a stand-in
upstream that records the headers it gets, and a callback receiver with scripted answers."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

__all__ = ["CallbackReceiver", "ReceivedCallback", "Receiver", "Upstream", "serving"]

ServerT = TypeVar("ServerT", bound=http.server.ThreadingHTTPServer)


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver keeping every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[PbSpan] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend(scope_spans.spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class Upstream(http.server.ThreadingHTTPServer):
    """A local HTTP server standing in for an upstream API, keeping the headers it gets.

    In a thread of its own: Litestar's test client runs the app on another thread's event loop
    and blocks the test's loop while a request is in flight.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.headers_seen: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@dataclass(frozen=True)
class ReceivedCallback:
    """One POST the callback receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


class CallbackReceiver(http.server.ThreadingHTTPServer):
    """A bulk-job callback receiver: answers each POST with the next scripted status.

    Args:
        statuses: Statuses of the first answers, in order; every later POST gets 200.

    Attributes:
        received: Every POST, in order of arrival.
        hold: While cleared, each POST waits for it before answering (a slow receiver);
            ``arrived`` is set when a POST is waiting.
    """

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _CallbackHandler)
        self.statuses = list(statuses or [])
        self.received: list[ReceivedCallback] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/c2s"


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    server: CallbackReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.received.append(
                ReceivedCallback(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.server.arrived.set()
        self.server.hold.wait(30)
        reply = b'{"ok":true}' if status < 300 else b'{"error":"try later"}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextlib.contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """Serve ``server`` from a daemon thread until the block ends; yields it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
