"""An asyncio TCP fault proxy: the chaos suite's stand-in for toxiproxy (``docs/chaos.md``).

The app reaches PostgreSQL and Redis through a :class:`FaultProxy` listening on a free loopback
port; the test switches the proxy's mode at run time:

``pass``
    Forward both ways.
``latency``
    Forward, holding each chunk travelling back from the target for ``latency_ms`` first, so
    every request/response round trip gets slower by about that much.
``reset``
    Abort every open connection with a TCP RST, and reset each new one as soon as it is accepted.
``blackhole``
    A network partition: accept new connections but never connect them onward, and stop moving
    bytes on the open ones (nothing is read, so TCP flow control holds the senders). Nothing is
    dropped: when the mode goes back to ``pass`` the held bytes flow again, as after a healed
    partition.
``refuse``
    A dead server: stop listening (new connections are refused by the kernel) and reset the open
    ones. The same port is listened on again when the mode changes back.

The proxy runs its own event loop in a daemon thread, so a test blocking its own loop (or a
fixture sleeping) never stalls the app's database traffic. Memory is bounded: at most
``max_connections`` connections, each holding at most one ``chunk_size`` read per direction in
user space (the rest waits in kernel buffers, under TCP flow control).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from types import TracebackType
    from typing import Any, Self

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

Mode = Literal["pass", "latency", "reset", "blackhole", "refuse"]
MODES: tuple[Mode, ...] = ("pass", "latency", "reset", "blackhole", "refuse")

_COMMAND_TIMEOUT_S = 5.0
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(slots=True)
class ProxyStats:
    """Counters since the proxy started.

    Attributes:
        accepted: Connections accepted.
        resets: Connections aborted with an RST (by ``reset``/``refuse`` or a failed onward
            connect).
        connect_failures: Onward connects that failed (the target was down).
        bytes_up: Bytes forwarded to the target.
        bytes_down: Bytes forwarded back to the clients.
        open: Connections open now.
    """

    accepted: int = 0
    resets: int = 0
    connect_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    open: int = 0


class _Link:
    """One client connection and, once connected, its onward connection."""

    __slots__ = ("client", "tasks", "upstream")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()


def _abort_if_connected(
    connecting: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> None:
    """Close the connection a discarded connect attempt made after all."""
    if connecting.cancelled() or connecting.exception() is not None:
        return
    _abort(connecting.result()[1])


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer``'s socket with an RST (SO_LINGER 0), not a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``, with faults switchable at run time.

    Args:
        name: For messages (``postgres``, ``redis``).
        target_host: Where to forward.
        target_port: Where to forward.
        max_connections: Connections beyond this are reset at once.
        chunk_size: Largest read per direction and connection.
        connect_timeout_s: Bound of each onward connect.
    """

    def __init__(
        self,
        name: str,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 256,
        chunk_size: int = 65536,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.name = name
        self.target = (target_host, target_port)
        self.stats = ProxyStats()
        self._max_connections = max_connections
        self._chunk_size = chunk_size
        self._connect_timeout_s = connect_timeout_s
        self._mode: Mode = "pass"
        self._latency_s = 0.0
        self._port = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"fault-proxy-{name}", daemon=True
        )
        self._flowing: asyncio.Event | None = None  # set unless blackholed (lives in the loop)

    # -- control (any thread) ----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (stable across ``refuse`` and back)."""
        return self._port

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    def start(self) -> Self:
        """Start the loop thread and listen on a free port."""
        self._thread.start()
        self._call(self._start())
        return self

    async def set_mode(self, mode: Mode, *, latency_ms: float = 0.0) -> None:
        """Switch to ``mode`` (from a test's event loop); returns once it is in force."""
        future = asyncio.run_coroutine_threadsafe(self._switch(mode, latency_ms), self._loop)
        await asyncio.wait_for(asyncio.wrap_future(future), _COMMAND_TIMEOUT_S)

    def close(self) -> None:
        """Reset every connection, stop listening and stop the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_COMMAND_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.name}: :{self._port} -> {self.target[1]}, {self._mode})"

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=_COMMAND_TIMEOUT_S)

    # -- inside the proxy's loop ---------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        self._port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._on_client, sock=sock)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _switch(self, mode: Mode, latency_ms: float) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        assert self._flowing is not None
        previous, self._mode = self._mode, mode
        self._latency_s = max(0.0, latency_ms) / 1000.0 if mode == "latency" else 0.0
        if mode in ("reset", "refuse"):
            self._reset_all()
        if mode == "refuse":
            await self._stop_listening()
        elif previous == "refuse" or self._server is None:
            await self._listen()
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _shutdown(self) -> None:
        self._mode = "reset"
        tasks = [task for link in self._links for task in link.tasks]
        self._reset_all()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await asyncio.wait_for(server.wait_closed(), _COMMAND_TIMEOUT_S)
        if tasks:
            await asyncio.wait(tasks, timeout=_COMMAND_TIMEOUT_S)
        for _ in range(3):  # let aborted transports finish closing before the loop goes
            await asyncio.sleep(0)

    def _reset_all(self) -> None:
        for link in list(self._links):
            self._drop(link, rst=True)

    def _drop(self, link: _Link, *, rst: bool) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        self.stats.open = len(self._links)
        if rst:
            self.stats.resets += 1
            _abort(link.client)
            _abort(link.upstream)
        else:
            for writer in (link.client, link.upstream):
                if writer is not None and not writer.transport.is_closing():
                    writer.close()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self._mode in ("reset", "refuse") or len(self._links) >= self._max_connections:
            self.stats.resets += 1
            _abort(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        self.stats.open = len(self._links)
        current = asyncio.current_task()
        if current is not None:
            link.tasks.add(current)
        try:
            await self._connect(link, reader)
        except asyncio.CancelledError:
            return
        finally:
            if current is not None:
                link.tasks.discard(current)

    async def _connect(self, link: _Link, reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        await self._flowing.wait()  # a blackholed SYN waits for the partition to heal
        if link not in self._links:
            return
        # The connect runs as its own task, shielded: a timeout or a cancellation that races its
        # completion must still close the connection it made, or the transport leaks (and its
        # ResourceWarning fails the run).
        connecting = asyncio.ensure_future(asyncio.open_connection(*self.target))
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.shield(connecting), self._connect_timeout_s
            )
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            connecting.cancel()
            connecting.add_done_callback(_abort_if_connected)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.stats.connect_failures += 1
            self._drop(link, rst=True)  # the target is down: the client sees its reset
            return
        if link not in self._links:
            _abort(up_writer)
            return
        link.upstream = up_writer
        for source, sink, down in ((reader, up_writer, False), (up_reader, link.client, True)):
            task = asyncio.ensure_future(self._pump(link, source, sink, down=down))
            link.tasks.add(task)

    async def _pump(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        down: bool,
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await source.read(self._chunk_size)
                if not data:
                    break
                await self._flowing.wait()  # partitioned after the read: hold this one chunk
                if down and self._latency_s:
                    await asyncio.sleep(self._latency_s)
                sink.write(data)
                await sink.drain()
                if down:
                    self.stats.bytes_down += len(data)
                else:
                    self.stats.bytes_up += len(data)
        except asyncio.CancelledError:
            return
        except OSError:
            self._drop(link, rst=True)
            return
        # One side closed: close both (PostgreSQL and Redis clients never half-close).
        self._drop(link, rst=False)
