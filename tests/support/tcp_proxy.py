"""A loopback TCP proxy that can be cut and restored (a server "goes away" and "returns")."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.support.processes import free_port

__all__ = ["TcpProxy"]


class TcpProxy:
    """A loopback TCP proxy that can be cut and restored (Redis "goes away" and "returns")."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Accept and forward connections."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        # Closed sockets end the pipes; cancelling the handlers instead would make asyncio's
        # stream machinery log the cancellation as an error.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ends = [writer]
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            ends.append(up_writer)
            self._writers.update(ends)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            for end in ends:
                self._writers.discard(end)
                end.close()
                with contextlib.suppress(OSError):
                    await end.wait_closed()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
