"""A TCP proxy on a free loopback port that can cut every connection it carries, to show
what clients do when the network drops (the server itself stays up), or freeze them: a
peer that silently stopped answering, with the connection still open."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from .helpers import host_port

MAX_RECORDED = 8192  # bytes of each connection's first request kept in ``requests``


class CuttingProxy:
    """``async with CuttingProxy(server_url) as proxy``: clients use ``proxy.url``;
    ``proxy.cut()`` aborts every open connection on both sides; ``proxy.requests`` holds
    the start of what each client connection sent (to see the headers of a reconnect)."""

    def __init__(self, target: str) -> None:
        self.target = host_port(target)
        self.requests: list[bytes] = []
        self.url = ""
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._frozen: set[int] = set()  # connections (by record) that relay nothing more

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection now, with a reset, as a network failure would."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def freeze(self) -> None:
        """From now on, the connections open now carry nothing either way, and stay open;
        connections made later work."""
        self._frozen.update(range(len(self.requests)))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        record = len(self.requests)
        self.requests.append(b"")
        never = asyncio.Event()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if record in self._frozen:
                        await never.wait()  # held open, relaying nothing, until cut
                    if log and len(self.requests[record]) < MAX_RECORDED:
                        self.requests[record] += data[:MAX_RECORDED]
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        tasks = [
            asyncio.create_task(pipe(reader, up_writer, True)),
            asyncio.create_task(pipe(up_reader, writer, False)),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        self._writers -= {writer, up_writer}
