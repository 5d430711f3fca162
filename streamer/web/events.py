"""``GET /events`` (subscribe) and ``POST /events/{topic}`` (publish).

A subscriber is an :class:`SseStream`: after the response headers and any
replay are written through aiohttp, live events bypass aiohttp's writer and
go straight to the socket's transport, as bytes framed once per group by the
fan-out. Nothing is queued per subscriber beyond the transport's own write
buffer, and a subscriber whose unsent bytes pass ``max_buffer`` is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import HttpVersion11, web

from .. import sse
from ..broker import Fanout, FanoutStats, Framing, Resume
from ..errors import Problem
from .keys import BROKER, LOG_HUB, SETTINGS

log = logging.getLogger("streamer.events")

TOPIC = re.compile(r"[A-Za-z0-9_.-]{1,64}")
EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
RESERVED_EVENTS = frozenset({"reset"})  # sent by the server itself
MAX_TOPICS_PER_STREAM = 64
REPLAY_WRITE_SIZE = 64 * 1024

SSE_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),  # tells nginx not to buffer the stream
)


def chunked(data: bytes) -> bytes:
    """HTTP/1.1 chunked transfer coding of one chunk (the fan-out frames once per group)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def unframed(data: bytes) -> bytes:
    """HTTP/1.0 has no chunking: the body simply ends when the connection does."""
    return data


class SseStream:
    """One subscriber: a :class:`~streamer.broker.Sink` writing to a transport.

    Until :meth:`go_live`, sent data waits in a backlog (the handler is still
    writing the preamble and replay through aiohttp); after it, data goes
    straight to the transport. ``closed`` resolves with why the stream ends:
    ``"slow"``, ``"gone"`` or ``"shutdown"``.
    """

    __slots__ = (
        "_backlog",
        "_backlog_size",
        "_fanout",
        "_limit",
        "_sent_since_tick",
        "_stats",
        "_transport",
        "closed",
        "framing",
        "topics",
    )

    def __init__(
        self,
        topics: frozenset[str] | None,
        framing: Framing,
        transport: asyncio.Transport,
        fanout: Fanout,
        limit: int,
    ) -> None:
        self.topics = topics
        self.framing = framing
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._transport = transport
        self._fanout = fanout
        self._stats: FanoutStats = fanout.stats
        self._limit = limit
        self._backlog: list[bytes] | None = []
        self._backlog_size = 0
        self._sent_since_tick = False

    def send(self, data: bytes) -> None:
        self._sent_since_tick = True
        backlog = self._backlog
        if backlog is not None:
            backlog.append(data)
            self._backlog_size += len(data)
            if self._backlog_size > self._limit:
                self._drop("slow")
            return
        transport = self._transport
        if transport.is_closing():
            self._drop("gone")
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self._limit:
            self._drop("slow")

    def go_live(self) -> None:
        """Flush the backlog and switch to direct writes."""
        backlog, self._backlog = self._backlog, None
        if backlog and not self.closed.done():
            self.send(b"".join(backlog))

    def heartbeat(self, ping: bytes) -> None:
        """Called every heartbeat period: ping if nothing was sent since the last call."""
        if self._transport.is_closing():
            self._drop("gone")
        elif self._sent_since_tick:
            self._sent_since_tick = False
        elif self._backlog is None:
            self.send(self.framing(ping))
            self._sent_since_tick = False

    def finish(self, reason: str) -> None:
        """End the stream gracefully: the handler flushes and closes the response."""
        self._fanout.remove(self)
        if not self.closed.done():
            self.closed.set_result(reason)

    def _drop(self, reason: str) -> None:
        if self.closed.done():
            return
        if reason == "slow":
            self._stats.dropped_slow += 1
            log.info("dropping slow subscriber (%d unsent bytes)", self._unsent())
        self._fanout.remove(self)
        self._transport.abort()
        self.closed.set_result(reason)

    def _unsent(self) -> int:
        return (
            self._backlog_size
            if self._backlog is not None
            else (self._transport.get_write_buffer_size())
        )


def parse_topics(request: web.Request) -> frozenset[str] | None:
    topics = request.query.getall("topic", [])
    if not topics:
        return None
    if len(topics) > MAX_TOPICS_PER_STREAM:
        raise Problem(400, "too-many-topics", f"At most {MAX_TOPICS_PER_STREAM} topics per stream.")
    for topic in topics:
        check_topic(topic)
    return frozenset(topics)


def check_topic(topic: str) -> None:
    if not TOPIC.fullmatch(topic):
        raise Problem(
            400,
            "invalid-topic",
            f"Topic {topic[:80]!r} is invalid: use 1 to 64 of A-Z a-z 0-9 _ . -",
        )


def replay_batches(frames: list[bytes]) -> list[bytes]:
    """Join replay frames into writes of about ``REPLAY_WRITE_SIZE`` bytes."""
    batches: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for frame in frames:
        batch.append(frame)
        size += len(frame)
        if size >= REPLAY_WRITE_SIZE:
            batches.append(b"".join(batch))
            batch, size = [], 0
    if batch:
        batches.append(b"".join(batch))
    return batches


def reset_frame(head_id: str, reason: str, last_event_id: str) -> bytes:
    data = json.dumps({"reason": reason, "lastEventId": last_event_id[:200]}, separators=(",", ":"))
    return sse.encode_event(head_id, "reset", data)


async def _write_opening(
    response: web.StreamResponse, retry_ms: int, resume: Resume, last_event_id: str | None
) -> None:
    """Preamble, then the reset event or the replay, through aiohttp (with flow control)."""
    opening = sse.encode_preamble(retry_ms)
    if resume.reset is not None:
        assert last_event_id is not None
        opening += reset_frame(resume.head_id, resume.reset, last_event_id)
    await response.write(opening)
    for batch in replay_batches(resume.replay):
        await response.write(batch)


async def open_sse_response(
    request: web.Request,
) -> tuple[web.StreamResponse, asyncio.Transport | None, Framing]:
    """Send the SSE headers; the transport is ``None`` when the client has already left.

    Shared by every stream endpoint (``/events``, ``/logs/...``).
    """
    response = web.StreamResponse(headers=SSE_HEADERS)
    is_chunked = request.version >= HttpVersion11
    if is_chunked:
        response.enable_chunked_encoding()
    framing: Framing = chunked if is_chunked else unframed
    try:
        await response.prepare(request)
    except ConnectionError:  # the client left before the headers went out
        return response, None, framing
    transport = request.transport
    if transport is None or transport.is_closing():
        return response, None, framing
    return response, transport, framing


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


async def stream_events(request: web.Request) -> web.StreamResponse:
    """``GET /events``: an SSE stream over the requested topics (all when none)."""
    broker = request.app[BROKER]
    settings = request.app[SETTINGS]
    topics = broker.fanout.shared_topics(parse_topics(request))
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")

    response, transport, framing = await open_sse_response(request)
    if transport is None:
        return response
    stream = SseStream(topics, framing, transport, broker.fanout, settings.max_buffer)
    resume = await broker.subscribe(stream, last_event_id)
    try:
        with client_may_leave(transport):
            await _write_opening(response, settings.retry, resume, last_event_id)
            del resume  # an idle stream keeps this frame alive: hold nothing big in it
            stream.go_live()
            if await stream.closed == "shutdown":  # inline: a helper coroutine would stay alive
                await response.write_eof()  # for the life of every idle stream
    finally:
        broker.unsubscribe(stream)
    return response


# -- publishing ----------------------------------------------------------------


def authorize_publisher(request: web.Request, token: str | None) -> None:
    """Bearer token when one is configured; otherwise loopback clients only."""
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Problem(
                401,
                "unauthorized",
                "Publishing needs 'Authorization: Bearer <token>' with the configured token.",
                headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
            )
        return
    if not is_loopback(request.remote):
        raise Problem(
            403,
            "forbidden",
            "No token is configured, so only clients on this machine may publish.",
        )


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to be over ``limit``."""
    too_large = Problem(413, "body-too-large", f"The body is over the limit of {limit} bytes.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def decode_payload(body: bytes, content_type: str) -> str:
    """JSON bodies are re-serialized compact; anything else must be UTF-8 text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "invalid-body", "The body is not valid UTF-8 text.") from None
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise Problem(400, "invalid-json", f"The body is not valid JSON: {exc}") from None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text


async def publish_event(request: web.Request) -> web.Response:
    """``POST /events/{topic}``: publish the body as one event."""
    settings = request.app[SETTINGS]
    authorize_publisher(request, settings.token)
    topic = request.match_info["topic"]
    check_topic(topic)
    event = request.query.get("event", "message")
    if not EVENT_NAME.fullmatch(event) or event in RESERVED_EVENTS:
        raise Problem(
            400,
            "invalid-event",
            f"Event name {event[:80]!r} is invalid or reserved: use 1 to 64 of "
            "A-Z a-z 0-9 _ . : - (not 'reset').",
        )
    body = await read_body(request, settings.max_body)
    data = decode_payload(body, request.content_type)
    published = await request.app[BROKER].publish(topic, data, event)
    return web.json_response({"id": published.id, "topic": topic}, status=201)


# -- lifecycle -------------------------------------------------------------------


async def heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: one task pings idle streams and notices dead ones."""
    task = asyncio.create_task(_heartbeat_loop(app), name="streamer-heartbeat")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _fanouts(app: web.Application) -> list[Fanout]:
    """The broker's fan-out, and the log tails' when they are running."""
    fanouts = [app[BROKER].fanout]
    hub = app.get(LOG_HUB)
    if hub is not None:
        fanouts.append(hub.fanout)
    return fanouts


async def _heartbeat_loop(app: web.Application) -> None:
    interval = app[SETTINGS].heartbeat
    while True:
        await asyncio.sleep(interval)
        for fanout in _fanouts(app):
            for stream in fanout.sinks():
                if isinstance(stream, SseStream):
                    stream.heartbeat(sse.PING)


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: deliver what is queued, then end every stream so clients reconnect."""
    for fanout in _fanouts(app):
        fanout.flush()
        for stream in fanout.sinks():
            if isinstance(stream, SseStream):
                stream.finish("shutdown")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/events", stream_events, allow_head=False)
    app.router.add_post("/events/{topic}", publish_event)
