"""The Redis Streams broker: one ordered log shared by every worker and host on one Redis.

Keys, under ``--redis-prefix`` P:

* ``P:log``, the stream. Entry ids are ``0-<n>``: ``n`` counts events, taken by the
  publish script from ``P:seq`` in the same atomic step as the ``XADD``, so the stream
  id *is* the event's offset and every worker agrees on it. (Redis's own
  ``<ms>-<seq>`` ids would not fit one offset, and a clock that steps back makes
  their ``seq`` grow without bound.) ``XADD ... MAXLEN ~ history`` keeps it bounded.
* ``P:epoch``, ``<epoch>:<floor>``, created once with ``SET NX``: the client ids are
  ``<epoch>-<n>``. A Redis that comes back empty (or with fewer events than were
  delivered: an AOF that lost its last second) gets a new epoch, so clients are
  reset instead of silently being served another history; ``floor`` is where that
  epoch's history starts.
* ``P:canary:<worker>``, each worker's private canary stream, and ``P:leader``, the
  worker that publishes shared sources' events.

Each worker has **one reader**: ``XREAD BLOCK`` on a connection of its own, handing
what it reads to the local :class:`~streamer.fanout.Fanout` (encoded once there), so
every worker delivers the same events in the same order, and Redis sees one
command per batch, not one per subscriber. Publishing is one script call from any
worker; the publisher's own subscribers get the event from the reader like
everyone else's.

The newest events the reader delivered are kept in a :class:`History` with the
memory broker's bounds: a resume from an id it covers needs no Redis at all; an
older one is read with ``XRANGE`` and joined with what the reader delivered
meanwhile (see :meth:`RedisBroker.subscribe`).

When Redis is away, a circuit breaker answers publishes at once (503) instead of
letting each wait for a timeout, the reader reconnects with backoff and jitter and
catches up from its last offset, and open streams stay open. A canary published to
the worker's private stream every few seconds must come back through the reader: a
reader that silently stopped receiving is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import BrokerClosed, BrokerUnavailable, StartupError
from ..fanout import Fanout, Frame, Sink
from ..sse import encode_event, encode_reset
from .history import History
from .model import Event, Health, Position, Resume

log = logging.getLogger("streamer.broker")

T = TypeVar("T")

# Redis errors that mean "not reachable now" (a refused or dropped connection, a timeout,
# a Redis still loading its data); anything else is a bug or a misconfiguration.
UNREACHABLE: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
)

CONNECT_TIMEOUT: Final = 2.0  # seconds to connect, and for a command to answer
BLOCK_MS: Final = 5_000  # the reader's XREAD BLOCK; its socket waits this + CONNECT_TIMEOUT
READ_COUNT: Final = 1_000  # entries per XREAD: a catch-up after an outage goes in batches
RESUME_PAGE: Final = 256  # entries per XRANGE of a resume from Redis
READER_CATCH_UP: Final = 5.0  # seconds a resume waits for the reader to reach its id
CANARY_EVERY: Final = 2.0  # seconds between canaries
CANARY_DEADLINE: Final = 4.0  # a canary not back through the reader by then: restart it
LEASE_MS: Final = 5_000  # the leader's lease; renewed every third of it
POOL_SIZE: Final = 32  # publish/resume connections per worker
POOL_EXHAUSTED: Final = "No connection available."  # redis-py's BlockingConnectionPool

# Publish: check the epoch, and that the log did not go back behind what this worker has
# seen (a Redis restarted from an AOF that lost its last second: the same ids would
# name other events), take the next offset, append; one atomic step.
# KEYS: log, epoch, seq. ARGV: epoch, maxlen, topic, event, data, the offset this
# worker knows.
PUBLISH: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1]
   or tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[6]) then
  return redis.error_reply('STREAMER-EPOCH the log has a new epoch')
end
local n = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. n,
           't', ARGV[3], 'e', ARGV[4], 'd', ARGV[5])
return n
"""

# The epoch this worker must use: created when missing, renewed when the log went back
# behind what this worker delivered. KEYS: epoch, seq. ARGV: a new epoch, the epoch this
# worker knows ('' for none), the offset it delivered. Returns {epoch, seq}.
SYNC_EPOCH: Final = """
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[1])
if (not epoch) or (epoch == ARGV[2] and seq < tonumber(ARGV[3])) then
  epoch = ARGV[1] .. ':' .. seq
  redis.call('SET', KEYS[1], epoch)
end
return {epoch, seq}
"""

# Take the lease if no one holds it, or keep it if it is ours. KEYS: leader. ARGV:
# worker, lease ms. 1 when this worker holds it now.
ACQUIRE: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def client_for(
    url: str, socket_timeout: float = CONNECT_TIMEOUT, pool_size: int = POOL_SIZE
) -> Redis:
    """A client for ``url`` that fails at once instead of retrying: the breaker decides."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=CONNECT_TIMEOUT,  # waiting for a free connection
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)  # closing the client closes its pool


async def ping(url: str) -> None:
    """Raise :class:`BrokerUnavailable` unless Redis at ``url`` answers."""
    client = client_for(url, pool_size=1)
    try:
        await _reaching(client.ping())
    finally:
        await client.aclose()


async def _reaching(call: Awaitable[T]) -> T:
    """``call``, with "Redis is not reachable" translated, once, at the boundary."""
    try:
        return await call
    except UNREACHABLE as exc:
        raise BrokerUnavailable(_reason(exc), 1) from None


def shown_url(url: str) -> str:
    """``url`` without its password, for log lines and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


class CircuitBreaker:
    """Stops a worker from hammering a Redis that is away, and its clients from waiting.

    Closed while Redis answers. After a failure it is open for a backoff (with jitter,
    doubling up to :attr:`max_delay`): calls fail at once. Then one call is let through
    as a probe; its success (or the reader reaching Redis again) closes it.
    """

    def __init__(self, name: str, base_delay: float = 0.1, max_delay: float = 2.0) -> None:
        self.name = name  # for its two log lines: opened, closed
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.failures = 0
        self.opened = 0  # times it opened, for /metrics
        self.reason = ""
        self._until = 0.0
        self._probing_until = 0.0  # a probe is under way until then (or until it ends)

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def retry_after(self) -> float:
        return max(self._until - time.monotonic(), 0.0)

    def check(self) -> None:
        """Raise :class:`BrokerUnavailable` unless a call may go to Redis now."""
        if not self.failures:
            return
        now = time.monotonic()
        if now < self._probing_until or now < self._until:
            raise BrokerUnavailable(self.reason, max(self.retry_after(), self.base_delay))
        # this caller is the probe: the others keep failing at once, until it ends, or
        # for as long as a call can take (a probe that was cancelled never ends)
        self._probing_until = now + 2 * CONNECT_TIMEOUT

    def failed(self, reason: str) -> None:
        if not self.failures:
            self.opened += 1
            log.warning("redis unreachable at %s: %s", self.name, reason)
        self.failures += 1
        self.reason = reason
        self._probing_until = 0.0
        delay = min(self.max_delay, self.base_delay * 2 ** min(self.failures - 1, 16))
        self._until = time.monotonic() + delay * random.uniform(0.5, 1.0)

    def succeeded(self) -> None:
        if self.failures:
            log.info("redis reachable again at %s", self.name)
        self.failures = 0
        self.reason = ""
        self._probing_until = 0.0


def backoff_delays(base: float = 0.05, cap: float = 1.0) -> Iterable[float]:
    """Reconnect delays: exponential, capped, with full jitter (no herd of workers
    reconnecting in step). Capped low: it is one connection per worker, and the
    delay is how long delivery waits after Redis is back."""
    for attempt in itertools.count():
        yield random.uniform(0, min(cap, base * 2 ** min(attempt, 16)))


class _EpochChanged(Exception):
    """The log has a new epoch: this worker must adopt it before going on."""


class RedisBroker:
    """Redis Streams broker; see the module docstring."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        fanout: Fanout,
        prefix: str = "streamer",
        history: int = 10_000,
        history_bytes: int = 64 << 20,
        block_ms: int = BLOCK_MS,
        canary_every: float = CANARY_EVERY,
        canary_deadline: float = CANARY_DEADLINE,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self.url = url
        self.fanout = fanout
        self.history_limit = history
        self.history_bytes = history_bytes
        self.block_ms = block_ms
        self.canary_every = canary_every
        self.canary_deadline = canary_deadline
        self.lease_ms = lease_ms
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.keys = _Keys(prefix, self.worker)
        self.redis = client_for(url)
        self._reader_redis: Redis | None = None
        self._publish = self.redis.register_script(PUBLISH)
        self._sync_epoch = self.redis.register_script(SYNC_EPOCH)
        self._acquire = self.redis.register_script(ACQUIRE)
        self._release = self.redis.register_script(RELEASE)
        self.breaker = CircuitBreaker(shown_url(url))
        self.epoch = 0
        self._floor = 0  # where this epoch's history starts
        self._delivered = 0  # the offset of the last event handed to the fan-out
        self._published = 0  # the newest offset this worker published
        self._recent = History(history, history_bytes)
        self._advanced = asyncio.Event()  # replaced each time the reader delivers
        self._epoch_lock = asyncio.Lock()
        self._closing = False  # aclose() began
        self._closed = False  # ... and the tasks stop
        self._leader = False
        self._lease_until = 0.0  # monotonic: past it, this worker does not count as leader
        self._canary_sent: tuple[int, float] | None = None  # (number, when) not seen yet
        self._canary_seen = 0
        self._canary_last_id = b"0-0"
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.canary_failures = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the epoch and start the reader, the canary and the election. Raises
        :class:`BrokerUnavailable` when Redis cannot be reached."""
        await _reaching(self._check_version())
        await _reaching(self._adopt_epoch())
        self._start_reader(fresh=True)
        self._tasks.append(asyncio.create_task(self._canary_loop(), name="redis-canary"))
        self._tasks.append(asyncio.create_task(self._lead_loop(), name="redis-leader"))

    async def _check_version(self) -> None:
        """Redis 7 or later: trimmed events are found through ``max-deleted-entry-id``."""
        info = await self.redis.info("server")
        version = str(info.get("redis_version", "0"))
        major = version.partition(".")[0]
        if not major.isdigit() or int(major) < 7:
            raise StartupError(
                f"Redis at {shown_url(self.url)} is {version}: streamer needs Redis 7 or later"
            )

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True  # no more publishes or subscribers; the reader goes on a bit
        # what this worker published is delivered here too, if the reader can get it
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._reader_delivered(self._published)
        self._closed = True
        await self._stop_reader()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._leader:
            with contextlib.suppress(*UNREACHABLE, redis_errors.RedisError):
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await self._release(keys=[self.keys.leader], args=[self.worker])
            self._leader = False
        self.fanout.flush()
        await self.redis.aclose()

    def health(self) -> Health:
        counters = {
            "reconnects": self.reconnects,
            "canary_failures": self.canary_failures,
            "breaker_opened": self.breaker.opened,
            "breaker_open": int(self.breaker.is_open),
            "leader": int(self.leads()),
        }
        if self._closing:
            return Health(self.kind, "closed", counters=counters)
        if self._reader is None or self._reader.done():
            return Health(self.kind, "unavailable", "the reader stopped", counters)
        if self.breaker.is_open:
            return Health(self.kind, "unavailable", self.breaker.reason, counters)
        return Health(self.kind, "ok", counters=counters)

    def leads(self) -> bool:
        return self._leader and time.monotonic() < self._lease_until

    @property
    def head(self) -> Position:
        return Position(self.epoch, self._delivered)

    # -- publish -----------------------------------------------------------------------

    async def publish(self, topic: str, data: str, event: str = "message") -> Event:
        self._check_open()
        self.breaker.check()
        for _ in range(2):  # a second time after adopting a new epoch
            epoch = self.epoch
            try:
                offset = int(
                    await self._publish(
                        keys=[self.keys.log, self.keys.epoch, self.keys.seq],
                        args=[
                            self._epoch_value,
                            self.history_limit,
                            topic,
                            event,
                            data,
                            self._known,
                        ],
                    )
                )
            except redis_errors.ResponseError as exc:
                if not str(exc).startswith("STREAMER-EPOCH"):  # OOM, READONLY, MISCONF...
                    raise await self._trip(exc) from None
                await self._reaching_or_trip(self._adopt_epoch())
                continue
            except UNREACHABLE as exc:
                raise await self._trip(exc) from None
            self.breaker.succeeded()
            self._published = max(self._published, offset)
            position = Position(epoch, offset)
            return Event(position, Frame(topic, encode_event(str(position), event, data)))
        raise BrokerUnavailable("the log's epoch keeps changing", 1)

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(self, sink: Sink, last_event_id: str | None) -> Resume:
        """Register ``sink`` and return what it missed.

        What the reader delivered recently is in :attr:`_recent`: a resume it covers
        is answered from there at once, like the memory broker's. An older id is read
        from Redis; while that is awaited the reader goes on delivering, so what it
        delivered meanwhile is taken from :attr:`_recent`, and what Redis returned past
        the reader is left out (the sink gets it live). The registration happens with
        no await between it and that join, so nothing falls between replay and live.
        """
        self._check_open()
        if not last_event_id:
            return self._register(sink, [], None)
        await self._reader_delivered(self._published)  # this worker's writes, then read
        position = Position.parse(last_event_id)
        if position is None:
            return self._register(sink, [], "malformed")
        if position.epoch != self.epoch:
            return self._register(sink, [], "epoch")
        offset = position.offset
        if offset > self._delivered and not await self._reader_reaches(offset):
            return self._register(sink, [], "unknown")
        if position.epoch != self.epoch:  # it changed while we waited
            return self._register(sink, [], "epoch")
        if offset < self._floor:
            return self._register(sink, [], "unknown")
        if self._recent.covers(offset):
            return self._register(sink, self._replay(sink, self._recent.after(offset)), None)
        missed = await self._read_missed(offset)
        if position.epoch != self.epoch:  # it changed while we read
            return self._register(sink, [], "epoch")
        if missed is None:
            return self._register(sink, [], "too-old")
        read_up_to = missed[-1].position.offset if missed else offset
        events = [e for e in missed if e.position.offset <= self._delivered]
        if read_up_to < self._delivered:  # the reader went further while we read
            if not self._recent.covers(read_up_to):
                return self._register(sink, [], "too-old")
            events += self._recent.after(read_up_to)
        if len(events) > self.history_limit or (
            sum(len(e.frame.data) for e in events) > self.history_bytes
        ):
            return self._register(sink, [], "too-old")
        return self._register(sink, self._replay(sink, events), None)

    def unsubscribe(self, sink: Sink) -> None:
        self.fanout.remove(sink)

    def _register(self, sink: Sink, replay: list[bytes], reset: str | None) -> Resume:
        self._check_open()  # it may have closed while the resume was read
        self.fanout.settle()  # what is queued is in the replay, or the sink had it
        self.fanout.add(sink)
        return Resume(replay, reset, self.head)

    @staticmethod
    def _replay(sink: Sink, events: Iterable[Event]) -> list[bytes]:
        topics = sink.topics
        return [e.frame.data for e in events if topics is None or e.frame.topic in topics]

    async def _reader_delivered(self, offset: int) -> None:
        """Wait (briefly, and not while Redis is away) until the reader delivered
        ``offset``: a resume after this worker's own publish then includes it, as on
        the memory broker, and its ``head`` is not behind what this worker answered."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READER_CATCH_UP):
                while self._delivered < offset and not self.breaker.is_open:
                    await self._advanced.wait()

    async def _reader_reaches(self, offset: int) -> bool:
        """Wait until the reader delivered ``offset`` (an id another worker handed out
        just now); False when the log has no such offset (an id from the future)."""
        seq = await self._reaching_or_trip(self.redis.get(self.keys.seq))
        if offset > int(seq or 0):
            return False
        epoch = self.epoch
        try:
            async with asyncio.timeout(READER_CATCH_UP):
                while self._delivered < offset and self.epoch == epoch:
                    await self._advanced.wait()
        except TimeoutError:
            raise BrokerUnavailable("the reader is behind the log", 1) from None
        return True

    async def _read_missed(self, offset: int) -> list[Event] | None:
        """The events after ``offset`` from Redis, up to what the reader delivered (or a
        little past it); None when some are gone (trimmed), or they are more than
        history allows. Read :data:`RESUME_PAGE` at a time and counted as they come: an
        old id costs at most the history's bounds, not the whole stream."""
        epoch = self.epoch
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(self.keys.log, min=f"(0-{offset}", count=RESUME_PAGE)
            pipe.xinfo_stream(self.keys.log)
            try:
                entries, info = await self._reaching_or_trip(pipe.execute())
            except redis_errors.ResponseError:  # no stream at all: nothing to resume
                return None
        deleted = _max_deleted(info)
        if deleted is not None and deleted > offset:
            return None
        events: list[Event] = []
        size = 0
        after = offset
        while entries:
            if _offset(entries[0][0]) != after + 1:  # trimmed while we read
                return None
            for entry in entries:
                event = _event(epoch, entry)
                if event is not None:
                    events.append(event)
                    size += len(event.frame.data)
                after = _offset(entry[0]) or after
            if len(events) > self.history_limit or size > self.history_bytes:
                return None
            if len(entries) < RESUME_PAGE or after >= self._delivered:
                break  # the end, or the reader has the rest (subscribe joins the two)
            entries = await self._reaching_or_trip(
                self.redis.xrange(self.keys.log, min=f"(0-{after}", count=RESUME_PAGE)
            )
        return events

    # -- the reader ------------------------------------------------------------------

    def _start_reader(self, fresh: bool = False) -> None:
        """``fresh``: the epoch was just learnt (at start); a reader started again checks
        it first, and whether events were trimmed before it could read them."""
        self._reader = asyncio.create_task(self._read_forever(fresh), name="redis-reader")

    async def _stop_reader(self) -> None:
        """Stop the reader. A cancel alone may not do: redis-py can swallow the cancel of
        a blocking read (redis/redis-py#2028), and the reader would go on until its
        ``XREAD`` timed out; so its connection is cut too."""
        task, self._reader = self._reader, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=0.05)
        await self._drop_reader_client()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _read_forever(self, fresh: bool) -> None:
        """Read the log from the last delivered offset, forever; reconnect when needed.
        Ends when the broker closes or another reader took its place."""
        delays = iter(backoff_delays())
        me = asyncio.current_task()
        while not self._closed and self._reader is me:
            client = self._reader_client()
            try:
                if not fresh:
                    await self._adopt_epoch()
                    await self._check_gap()  # on the reader's own, new connection
                    self.breaker.succeeded()  # Redis is back: publishing may go on at once
                fresh = False
                while not self._closed and self._reader is me:
                    epoch = self.epoch
                    positions = {
                        self.keys.log: f"0-{self._delivered}",
                        self.keys.canary: self._canary_last_id,
                    }
                    reply = await client.xread(
                        positions,  # type: ignore[arg-type]
                        count=READ_COUNT,
                        block=self.block_ms,
                    )
                    self.breaker.succeeded()  # the reader reached Redis: it is there
                    delays = iter(backoff_delays())
                    if epoch == self.epoch and self._reader is me:  # else it is stale
                        await self._take(reply)
            except asyncio.CancelledError:
                raise
            except (*UNREACHABLE, redis_errors.RedisError) as exc:
                if self._closed or self._reader is not me:  # its connection was cut
                    return
                await self._trip(exc)  # the pool's idle connections are as dead as this one
                self.reconnects += 1
                await self._drop_reader_client()
                await asyncio.sleep(next(delays))

    def _reader_client(self) -> Redis:
        if self._reader_redis is None:
            self._reader_redis = client_for(
                self.url, socket_timeout=self.block_ms / 1000 + CONNECT_TIMEOUT, pool_size=1
            )
        return self._reader_redis

    async def _drop_reader_client(self) -> None:
        client, self._reader_redis = self._reader_redis, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _take(self, reply: Any) -> None:
        """Hand what one XREAD returned to the fan-out, in offset order."""
        if not reply:
            return
        streams = reply.items() if isinstance(reply, Mapping) else reply
        for key, entries in streams:
            if key == self.keys.canary_bytes or key == self.keys.canary:
                self._canary_arrived(entries)
                continue
            first = _offset(entries[0][0]) if entries else None
            if first is not None and first > self._delivered + 1:  # trimmed before it was read?
                await self._check_gap()
            epoch = self.epoch
            recent = self._recent
            publish = self.fanout.publish
            for entry in entries:
                event = _event(epoch, entry)
                if event is None or event.position.offset <= self._delivered:
                    continue
                recent.append(event)
                publish(event.frame)
                self._delivered = event.position.offset
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wake what waits for the reader: it advanced, the epoch changed, or Redis left."""
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def _check_gap(self) -> None:
        """Tell local subscribers when events after the delivered offset were trimmed
        before the reader read them (it was away longer than history lasts)."""
        try:
            info = await self._reader_client().xinfo_stream(self.keys.log)
        except redis_errors.ResponseError:  # no stream (yet): nothing was trimmed
            return
        deleted = _max_deleted(info)
        if deleted is not None and deleted > self._delivered:
            lost_after = self.head
            self._delivered = deleted
            self._recent = History(self.history_limit, self.history_bytes, start=deleted)
            log.warning("events after %s were trimmed before this worker read them", lost_after)
            self.fanout.broadcast(encode_reset(str(self.head), "too-old", str(lost_after)))

    # -- the epoch ---------------------------------------------------------------------

    @property
    def _epoch_value(self) -> str:
        return f"{self.epoch}:{self._floor}"

    @property
    def _known(self) -> int:
        """The newest offset this worker has seen: delivered, or answered to a publisher."""
        return max(self._delivered, self._published)

    async def _adopt_epoch(self) -> None:
        """Learn the log's epoch (creating it, or a new one when the log went back); when
        it is not the one this worker delivered from, start over from its floor and send
        local subscribers a ``reset`` (reason ``epoch``)."""
        async with self._epoch_lock:
            known = self._epoch_value if self.epoch else ""
            candidate = str(max(time.time_ns() // 1_000_000, self.epoch + 1))
            value, seq = await self._sync_epoch(
                keys=[self.keys.epoch, self.keys.seq], args=[candidate, known, self._known]
            )
            text = value.decode() if isinstance(value, bytes) else str(value)
            epoch_text, _, floor_text = text.partition(":")
            epoch, floor = int(epoch_text), int(floor_text or 0)
            if epoch == self.epoch:
                return
            first = self.epoch == 0
            old_head = self.head
            self.epoch, self._floor = epoch, floor
            start = int(seq) if first else floor  # a new worker starts live
            self._delivered = start
            self._published = min(self._published, start)
            self._recent = History(self.history_limit, self.history_bytes, start=start)
            self._wake_waiters()
            if not first:
                log.warning("the Redis log starts over (epoch %d): subscribers are reset", epoch)
                self.fanout.broadcast(encode_reset(str(self.head), "epoch", str(old_head)))

    # -- canary and leadership ---------------------------------------------------------

    async def _canary_loop(self) -> None:
        """Every :attr:`canary_every` s, append to this worker's canary stream and check
        that the last one came back through the reader in time, and that the log's
        epoch is still the one this worker reads."""
        number = 0
        while not self._closed:
            await asyncio.sleep(self.canary_every)
            if self._reader is None or self._reader.done():  # it died of something else
                log.error("the redis reader ended: starting it again")
                self._start_reader()
                continue
            sent = self._canary_sent
            if sent is not None and time.monotonic() - sent[1] > self.canary_deadline:
                if not self.breaker.is_open:  # an outage is the reader's own business
                    self.canary_failures += 1
                    log.warning("the redis reader stopped receiving: restarting it")
                    await self._restart_reader()
                self._canary_sent = None
            if self.breaker.is_open:
                continue
            with contextlib.suppress(*UNREACHABLE, redis_errors.RedisError):
                await self._check_epoch()
            if self._canary_sent is not None:
                continue
            number += 1
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(self.keys.canary, {"n": number}, maxlen=1, approximate=False)
                    pipe.pexpire(self.keys.canary, int(max(60, self.canary_deadline * 4) * 1000))
                    added, _ = await pipe.execute()
            except (*UNREACHABLE, redis_errors.RedisError):
                continue  # the reader or the next publish notices
            if _stream_id(added) <= _stream_id(self._canary_last_id):
                # the key had expired and came back with older ids (Redis's clock): read
                # it from the start, or the reader would never see a canary again
                self._canary_last_id = b"0-0"
            if number > self._canary_seen:
                self._canary_sent = (number, time.monotonic())

    async def _check_epoch(self) -> None:
        """Adopt a new epoch made while this worker's reader kept its connection (the
        keys were flushed, or another worker found the log had gone back): an idle
        worker would otherwise never notice, its reader reading past the new events."""
        value = await self.redis.get(self.keys.epoch)
        text = value.decode() if isinstance(value, bytes) else value
        if text != self._epoch_value:
            await self._adopt_epoch()

    def _canary_arrived(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            self._canary_last_id = entry_id
            with contextlib.suppress(KeyError, ValueError, TypeError):
                self._canary_seen = max(self._canary_seen, int(fields[b"n"]))
        if self._canary_sent is not None and self._canary_seen >= self._canary_sent[0]:
            self._canary_sent = None

    async def _restart_reader(self) -> None:
        await self._stop_reader()
        self.reconnects += 1
        self._start_reader()

    async def _lead_loop(self) -> None:
        """Hold (or try to take) the leader's lease, renewing it every third of it.

        This worker counts itself leader only until 4/5 of a lease after the call that
        got or renewed it was sent (:meth:`leads`): a slow answer, or a loop that
        stalled, cannot make it go on past a lease another worker has taken by then.
        """
        key, me, lease = self.keys.leader, self.worker, self.lease_ms
        while not self._closed:
            sent = time.monotonic()
            try:
                async with asyncio.timeout(lease / 3000):
                    held = bool(await self._acquire(keys=[key], args=[me, lease]))
            except (TimeoutError, *UNREACHABLE, redis_errors.RedisError):
                held = False  # cannot be sure of it: better no one than two
            self._leader = held
            self._lease_until = sent + lease * 0.8 / 1000 if held else 0.0
            await asyncio.sleep(lease / 3000)

    # -- helpers -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise BrokerClosed("the broker is closed")

    async def _reaching_or_trip(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except UNREACHABLE as exc:
            raise await self._trip(exc) from None

    async def _trip(self, exc: BaseException) -> BrokerUnavailable:
        """Open the breaker, and drop the pool's idle connections: after a restart of
        Redis each of them is as dead as the one that failed, and would fail one
        publish each (one probe after another, seconds after Redis was back)."""
        reason = _reason(exc)
        if reason == POOL_EXHAUSTED:  # Redis is there, this worker is busy: no outage
            return BrokerUnavailable("too many Redis calls at once", 1)
        self.breaker.failed(reason)
        self._wake_waiters()
        with contextlib.suppress(Exception):
            await self.redis.connection_pool.disconnect(inuse_connections=False)
        return BrokerUnavailable(reason, self.breaker.retry_after())


class _Keys:
    __slots__ = ("canary", "canary_bytes", "epoch", "leader", "log", "seq")

    def __init__(self, prefix: str, worker: str) -> None:
        self.log = f"{prefix}:log"
        self.seq = f"{prefix}:seq"
        self.epoch = f"{prefix}:epoch"
        self.leader = f"{prefix}:leader"
        self.canary = f"{prefix}:canary:{worker}"
        self.canary_bytes = self.canary.encode()


def _offset(entry_id: bytes | str | None) -> int | None:
    """The offset in a stream id ``0-<n>``; None for anything else."""
    if entry_id is None:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if ms != "0" or not seq.isdigit():
        return None
    return int(seq)


def _stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id ``<ms>-<seq>`` as a pair that sorts like the ids."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms or 0), int(seq or 0)


def _max_deleted(info: Mapping[Any, Any]) -> int | None:
    """The newest offset trimmed from the stream, from ``XINFO STREAM`` (Redis 7)."""
    value = info.get("max-deleted-entry-id", info.get(b"max-deleted-entry-id"))
    return _offset(value)


def _event(epoch: int, entry: tuple[bytes, Mapping[bytes, bytes]]) -> Event | None:
    """The event in a stream entry, encoded once; None for an entry not written by us."""
    entry_id, fields = entry
    offset = _offset(entry_id)
    try:
        topic = fields[b"t"].decode()
        name = fields[b"e"].decode()
        data = fields[b"d"].decode()
    except (KeyError, UnicodeDecodeError, AttributeError):
        offset = None
    if offset is None:
        log.warning("skipped a stream entry streamer did not write: %r", entry_id)
        return None
    position = Position(epoch, offset)
    return Event(position, Frame(topic, encode_event(str(position), name, data)))
