"""The SSE stream machinery every stream endpoint shares (``/events``, ``/logs/...``).

A subscriber is an :class:`SseStream`, a :class:`~streamer.fanout.Sink`. Its
life, the same for every endpoint:

1. **register** with its fan-out first (through the broker, or the log hub),
   so nothing published from now on can miss it; what arrives meanwhile waits
   in the stream's backlog, bounded like its buffer;
2. **answer**: the headers, then ``retry:`` and ``: connected``, then the
   reset or what it missed, written through aiohttp with flow control
   (a client that sees the headers, as a browser's ``open`` event, is
   already subscribed);
3. **go live**: the backlog is flushed and live data bypasses aiohttp's
   writer, going straight to the socket's transport as bytes framed once per
   group by the fan-out. A subscriber that falls behind is *held*: once its
   transport buffers more than :data:`HOLD_ABOVE`, what follows waits in a
   list of the fan-out's own bytes objects (shared with the rest of its group,
   never copied) and is handed to the transport a piece at a time as the
   client reads. A subscriber whose unsent bytes pass ``max_buffer`` is cut.

The lifecycle here (one heartbeat task, the graceful end at shutdown) knows
no endpoint: it walks the fan-outs that the subsystems register with
:func:`register_fanout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Final

from aiohttp import HttpVersion11, web

from .. import sse
from ..fanout import Fanout, FanoutStats, Framing
from .keys import FANOUTS, SETTINGS, UNSENT
from .unsent import STREAM_SNDBUF, UnsentBudget

log = logging.getLogger("streamer.streams")

SSE_HEADERS: Final = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),  # tells nginx not to buffer the stream
)
OPENING_WRITE_SIZE: Final = 64 * 1024  # replay and catch-up are written in pieces of this size
# A live stream whose transport buffers more than this (asyncio's high-water mark) is held:
# the transport's buffer is one bytearray, and growing one by megabytes while it drains
# from the front copies all of it again and again (100 lagging tails of a 1M-line burst:
# 1.8x the CPU per line, 4.9 GB peak RSS). Held bytes go to it in pieces of RELEASE_PIECE.
HOLD_ABOVE: Final = 64 * 1024
RELEASE_PIECE: Final = 256 * 1024
_RELEASING: set[asyncio.Task[None]] = set()  # the running releases of held streams


def chunked(data: bytes) -> bytes:
    """HTTP/1.1 chunked transfer coding of one chunk (the fan-out frames once per group)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def unframed(data: bytes) -> bytes:
    """HTTP/1.0 has no chunking: the body simply ends when the connection does."""
    return data


def last_event_id(request: web.Request) -> str | None:
    """Where the client resumes: the ``Last-Event-ID`` header, else ``?lastEventId=`` (for
    clients that cannot set headers). An empty value means "no id", as in EventSource."""
    return request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or None


class SseStream:
    """One subscriber: a :class:`~streamer.fanout.Sink` writing to a transport.

    Until :meth:`go_live`, sent data waits in a backlog (the handler is still
    writing the opening through aiohttp); after it, data goes straight to the
    transport. ``closed`` resolves with why the stream ends: ``"slow"``,
    ``"gone"`` or ``"shutdown"``. ``sent`` counts the bytes written directly
    (for the access log) once :meth:`stop_counting` has run: while live, what
    the fan-out writes is counted by its group's running total.
    """

    __slots__ = (
        "_backlog",
        "_backlog_size",
        "_budget",
        "_counted_from",
        "_drain",
        "_fanout",
        "_held",
        "_held_size",
        "_kernel_buffer",
        "_limit",
        "_sent_since_tick",
        "_stats",
        "charged",
        "closed",
        "framing",
        "sent",
        "topics",
        "transport",
    )

    def __init__(
        self,
        topics: frozenset[str] | None,
        framing: Framing,
        transport: asyncio.Transport,
        fanout: Fanout,
        limit: int,
        budget: UnsentBudget,
        drain: Callable[[], Awaitable[None]],
    ) -> None:
        self.topics = topics
        self.framing = framing
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sent = 0
        self.transport = transport
        self._fanout = fanout
        self._stats: FanoutStats = fanout.stats
        self._limit = limit
        self._backlog: list[bytes] | None = []
        self._backlog_size = 0
        self._sent_since_tick = False
        self._counted_from: int | None = None  # the group's total when it went live
        self._budget = budget
        self.charged = 0  # what the server-wide budget holds against this stream
        self._kernel_buffer = cap_send_buffer(transport)
        self._drain = drain  # returns once the transport is under its low-water mark
        self._held: deque[bytes] | None = None  # see HOLD_ABOVE
        self._held_size = 0

    @property
    def live(self) -> bool:
        return self._backlog is None

    def send(self, data: bytes) -> None:
        self._sent_since_tick = True
        backlog = self._backlog
        if backlog is not None:
            backlog.append(data)
            self._backlog_size += len(data)
            if self._backlog_size > self._limit:
                self._drop("slow")
            else:
                self._budget.charge(self, self._backlog_size)
            return
        transport = self.transport
        if transport.is_closing():
            self._drop("gone")
            return
        held = self._held
        if held is None:
            transport.write(data)
            unsent = transport.get_write_buffer_size()
            if unsent > HOLD_ABOVE:
                self._hold()
        else:
            held.append(data)
            self._held_size += len(data)
            unsent = self._held_size + transport.get_write_buffer_size()
        if unsent > self._limit:
            self._drop("slow")
        elif unsent or self.charged:  # a reader that keeps up never gets here
            self._budget.charge(self, unsent + self._kernel_buffer if unsent else 0)

    def _hold(self) -> None:
        """From now on keep what is sent, until the client has read what the transport has."""
        held: deque[bytes] = deque()
        self._held = held
        self._held_size = 0
        task = asyncio.get_running_loop().create_task(self._release(held))
        _RELEASING.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_RELEASING.discard)

    async def _release(self, held: deque[bytes]) -> None:
        """Hand ``held`` to the transport a piece at a time, each once the client has read
        enough of what the transport has; once it has read all that with nothing held, the
        stream sends directly again. Ends by itself when the stream does (its connection
        lost, or the stream emptied ``held``)."""
        transport = self.transport
        try:
            while True:
                try:
                    await self._drain()
                except ConnectionError:
                    return
                if not held or transport.is_closing():
                    return  # drained with nothing held: direct writes again
                piece = [held.popleft()]
                size = len(piece[0])
                while held and size < RELEASE_PIECE:
                    data = held.popleft()
                    piece.append(data)
                    size += len(data)
                self._held_size -= size
                transport.write(piece[0] if len(piece) == 1 else b"".join(piece))
        finally:
            if self._held is held:
                self._held = None
                self._held_size = 0

    def _write_held(self) -> None:
        """Everything held, to the transport now (a graceful end must come after it)."""
        held = self._held
        if held is None:
            return
        if held and not self.transport.is_closing():
            self.transport.write(b"".join(held))
        self._forget_held()

    def _forget_held(self) -> None:
        """Stop holding (what is held is dropped): its release sees nothing left and ends."""
        if self._held is not None:
            self._held.clear()
            self._held = None
            self._held_size = 0

    def go_live(self) -> None:
        """Flush the backlog and switch to direct writes."""
        backlog, self._backlog = self._backlog, None
        if self.closed.done():
            return
        self._counted_from = self._fanout.bytes_to_group(self)
        if backlog:
            data = b"".join(backlog)
            self.sent += len(data)
            self.send(data)
        if self._fanout.closing:  # registered after the shutdown pass: end it like the rest
            self.finish("shutdown")

    def stop_counting(self) -> None:
        """Add what the fan-out wrote to it while live to :attr:`sent` (before it leaves
        the fan-out; idempotent)."""
        if self._counted_from is not None:
            self.sent += self._fanout.bytes_to_group(self) - self._counted_from
            self._counted_from = None

    def heartbeat(self, ping: bytes) -> None:
        """Called every heartbeat period: ping if nothing was sent since the last call."""
        if self.transport.is_closing():
            self._drop("gone")
        elif self._sent_since_tick:
            self._sent_since_tick = False
        elif self._backlog is None:
            framed = self.framing(ping)
            self.sent += len(framed)
            self.send(framed)
            self._sent_since_tick = False

    def finish(self, reason: str) -> None:
        """End the stream gracefully: the handler flushes and closes the response. A stream
        still writing its opening cannot be ended between two of its writes: it is closed
        (it resumes by id like any reconnect)."""
        self.stop_counting()
        self._fanout.remove(self)
        self._budget.release(self)
        self._write_held()
        if not self.live:
            self.transport.abort()  # close() would wait for a buffer the client may not read
        if not self.closed.done():
            self.closed.set_result(reason)

    def unsent(self) -> int:
        """Bytes written for the client but not read by it yet (see :mod:`.unsent`)."""
        if self._backlog is not None:
            return self._backlog_size
        if self.transport.is_closing():
            return 0
        buffered = self.transport.get_write_buffer_size() + self._held_size
        return buffered + self._kernel_buffer if buffered else 0

    def cut(self, reason: str) -> None:
        """Cut by the server-wide budget, which logs one line for all it cuts."""
        self._drop(reason, quiet=True)

    def _drop(self, reason: str, quiet: bool = False) -> None:
        if self.closed.done():
            return
        if reason == "slow":
            self._stats.dropped_slow += 1
            if not quiet:
                log.info("dropping slow subscriber (%d unsent bytes)", self.unsent())
        self.stop_counting()
        self._fanout.remove(self)
        self._budget.release(self)
        self._forget_held()
        self.transport.abort()
        self.closed.set_result(reason)


def cap_send_buffer(transport: asyncio.Transport) -> int:
    """Cap the kernel send buffer of a stream's socket (see :data:`.unsent.STREAM_SNDBUF`);
    return its size as the kernel reports it (0 when unknown)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except (OSError, AttributeError):  # not a TCP socket (a pipe in a test), or no such call
        return 0


class SseResponse(web.StreamResponse):
    """The response of a stream. Its ``body_length``, the access log's byte count, is the
    body as it went out (chunk framing included), through aiohttp or past it, also when the
    client ended the stream (aiohttp's own count is only known after a clean end)."""

    def __init__(self) -> None:
        super().__init__(headers=SSE_HEADERS)
        self.stream: SseStream | None = None
        self.written = 0  # through aiohttp

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self.written += size + (len(b"%x\r\n\r\n" % size) if self.chunked else 0)
        await super().write(data)

    @property
    def body_length(self) -> int:
        return self.written + (self.stream.sent if self.stream is not None else 0)


def start_stream(
    request: web.Request, fanout: Fanout, topics: frozenset[str] | None
) -> tuple[SseResponse, SseStream | None]:
    """A response (not prepared yet: register first) and its stream for ``topics`` of
    ``fanout``; the stream is ``None`` when the client has already left."""
    response = SseResponse()
    is_chunked = request.version >= HttpVersion11
    if is_chunked:
        response.enable_chunked_encoding()
    transport = request.transport
    if transport is None or transport.is_closing():
        return response, None
    limit = request.app[SETTINGS].max_buffer
    framing = chunked if is_chunked else unframed
    budget = request.app[UNSENT]
    stream = SseStream(topics, framing, transport, fanout, limit, budget, request.writer.drain)
    response.stream = stream
    return response, stream


async def write_opening(
    request: web.Request, response: SseResponse, opening: bytes, frames: list[bytes]
) -> None:
    """Send the headers, the preamble with ``opening`` (a reset or the last lines), then
    ``frames`` (a replay) in writes of about :data:`OPENING_WRITE_SIZE`.

    Each write waits for the client to read the one before (aiohttp drains past 64 KiB),
    so a replay of the whole history costs one write's worth of buffer, not the history;
    a client that reads nothing for ``--send-timeout`` seconds is cut, as it would be by
    nginx's ``send_timeout`` (it resumes by id like any reconnect).
    """
    settings = request.app[SETTINGS]
    timeout = settings.send_timeout
    await response.prepare(request)
    await write_within(response, sse.encode_preamble(settings.retry) + opening, timeout)
    batch: list[bytes] = []
    size = 0
    for frame in frames:
        batch.append(frame)
        size += len(frame)
        if size >= OPENING_WRITE_SIZE:
            await write_within(response, b"".join(batch), timeout)
            batch, size = [], 0
    if batch:
        await write_within(response, b"".join(batch), timeout)


async def write_within(response: SseResponse, data: bytes, timeout: float) -> None:
    """Write ``data`` through aiohttp (which waits for the client past 64 KiB); a client
    that reads nothing for ``timeout`` seconds is cut: ``ConnectionResetError``."""
    try:
        async with asyncio.timeout(timeout):
            await response.write(data)
    except TimeoutError:
        stream = response.stream
        if stream is not None:
            stream.transport.abort()
        raise ConnectionResetError(f"the client read nothing for {timeout:g} s") from None


async def end_at_shutdown(request: web.Request, response: SseResponse) -> None:
    """End the response of a stream that :func:`close_streams` finished: its last chunk
    goes out, so the client sees a clean end and reconnects. A client that does not read
    it within half of ``--shutdown-timeout`` is cut instead (it resumes by id, losing
    nothing), so that 5,000 full buffers cannot hold the shutdown for its whole timeout
    and then aiohttp's second wait as long again (2.3 s with a 1 s timeout)."""
    try:
        async with asyncio.timeout(request.app[SETTINGS].shutdown_timeout / 2):
            await response.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


class client_may_leave:
    """A client that goes away is the normal end of a stream, not an error.

    With ``handler_cancellation`` its leaving cancels the handler: that is
    swallowed (and uncancelled) so aiohttp finishes the request and writes its
    access-log line. A write to a connection it closed is swallowed too. (A
    small class rather than ``@contextmanager``: it stays alive for the whole
    life of every idle stream, and a generator frame would cost more memory.)
    """

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if kind is None:
            return False
        if issubclass(kind, ConnectionError):
            return True
        if issubclass(kind, asyncio.CancelledError):
            task = asyncio.current_task()
            if self.transport.is_closing() and task is not None:
                task.uncancel()
                return True
        return False


# -- lifecycle -------------------------------------------------------------------


def register_fanout(app: web.Application, fanout: Fanout) -> None:
    """Let the heartbeat and the shutdown reach the streams of ``fanout``."""
    app[FANOUTS].append(fanout)


async def heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: one task pings idle streams and notices dead ones."""
    task = asyncio.create_task(_heartbeat_loop(app), name="streamer-heartbeat")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _heartbeat_loop(app: web.Application) -> None:
    interval = app[SETTINGS].heartbeat
    while True:
        await asyncio.sleep(interval)
        for fanout in app[FANOUTS]:
            for stream in fanout.sinks():
                if isinstance(stream, SseStream):
                    stream.heartbeat(sse.PING)


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: deliver what is queued, then end every stream so clients reconnect."""
    for fanout in app[FANOUTS]:
        fanout.closing = True
        fanout.flush()
        for stream in fanout.sinks():
            if isinstance(stream, SseStream):
                stream.finish("shutdown")
