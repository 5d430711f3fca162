"""Local fan-out: hand each event's bytes to every matching subscriber.

The hot path of the whole server. Three decisions keep it cheap:

* **Encode once.** An event is encoded to SSE bytes once, at publish.
* **Group subscribers by what they receive.** Subscribers with the same
  topic filter and the same transfer framing get byte-identical data, so the
  bytes for a group are built once and written to each member as they are.
* **Coalesce per loop iteration.** Events published during one event-loop
  iteration are delivered together at the next one, as one write per
  subscriber. Under load this turns N events x M subscribers syscalls into
  M syscalls, and it costs nothing when traffic is light (the flush runs on
  the very next iteration).
* **Bound each pass.** A scheduled delivery writes for about
  :data:`PASS_SECONDS` and goes on at the next iteration, so a huge pass to
  laggards cannot hold the loop, nor the events of other groups (what a
  subscriber gets, and in what order, does not change). While a group's pass
  is unfinished, what is published for it gathers in one waiting write (up
  to :data:`CHECK_BYTES`), so a pass spread over many iterations still costs
  each member one write per pass, not one per iteration.

Sinks are called synchronously: there is no queue and no coroutine per
subscriber. A sink must never block; it writes to its transport or drops
itself (see ``streamer.web.streams``).

The fan-out knows nothing of brokers: the event broker hands it the frames of
published events, the log hub the frames of log lines, each its own instance.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol


class Frame(NamedTuple):
    """What the fan-out delivers: the encoded SSE bytes of one event, and the topic that
    decides who gets them. (A named tuple: made once per event, it is the cheapest
    immutable value to build.)"""

    topic: str
    data: bytes


# How long one scheduled delivery writes before the loop gets to run others. One 100 KB
# event to 5,000 subscribers that have stopped reading is 500 MB of copies (into the
# kernel, or into transport buffers): in one pass it held the loop 1.5 s, and a /healthz
# meanwhile had a p99 of 1.1 s. Slices of 2 MiB brought that to 31 ms, but counted the
# subscribers already cut as if written to, so a pass crawled over 250 iterations; time
# is what matters. Small events to 10,000 readers are one iteration.
PASS_SECONDS: Final = 0.005
CHECK_EVERY: Final = 64  # members written between two looks at the clock, at most,
CHECK_BYTES: Final = 1 << 20  # or fewer, so that about this much is written in between

Framing = Callable[[bytes], bytes]
GroupKey = tuple[frozenset[str] | None, Framing]


class _Write:
    """One write to a group: its members as they were when it was planned, the frames
    they get, and how far it got. Until it starts, frames for the same members may join
    it (:attr:`data` is built when it starts)."""

    __slots__ = ("data", "frames", "key", "members", "next", "size")

    def __init__(self, key: GroupKey, members: tuple[Sink, ...], frames: list[bytes]) -> None:
        self.key = key
        self.members = members
        self.frames = frames
        self.size = sum(map(len, frames))
        self.data: bytes | None = None  # framed, once started
        self.next = 0  # the member to write to next


class Sink(Protocol):
    """A subscriber as the fan-out sees it."""

    topics: frozenset[str] | None  # None: every topic
    framing: Framing  # applied once per group to the joined event bytes

    def send(self, data: bytes) -> None:
        """Take framed bytes; must not block or raise."""
        ...


@dataclass(slots=True)
class FanoutStats:
    """Counters exported on /metrics."""

    published: int = 0
    delivered: int = 0  # events x subscribers
    bytes_sent: int = 0
    dropped_slow: int = 0  # subscribers cut because they could not keep up


class Fanout:
    """Registry of local subscribers and the coalescing delivery loop."""

    def __init__(self) -> None:
        self._groups: dict[GroupKey, dict[Sink, None]] = {}
        self._by_topic: dict[str, set[GroupKey]] = {}
        self._wildcard: set[GroupKey] = set()
        # one instance of each topic set in use, and how many groups use it (a set is in
        # at most one group per framing): so a remove never scans the other groups
        self._topic_sets: dict[frozenset[str], frozenset[str]] = {}
        self._topic_set_groups: dict[frozenset[str], int] = {}
        self._pending: list[Frame] = []
        self._group_bytes: dict[GroupKey, int] = {}  # written to each group so far
        self._flush_handle: asyncio.Handle | None = None
        self._writes: deque[_Write] = deque()  # planned, in order, not finished
        # per group, its last write if it has not started and its members have not changed
        # since: what is published for that group joins it instead of making another
        self._gathering: dict[GroupKey, _Write] = {}
        self._count = 0
        self.stats = FanoutStats()
        self.closing = False  # set at shutdown: a sink that arrives later is ended at once

    def __len__(self) -> int:
        return self._count

    def sinks(self) -> Iterator[Sink]:
        """Every registered sink (a snapshot, safe to modify the registry while iterating)."""
        for group in list(self._groups.values()):
            yield from list(group)

    def shared_topics(self, topics: frozenset[str] | None) -> frozenset[str] | None:
        """An equal topic set already in use, if any: thousands of equal filters share one."""
        if topics is None:
            return None
        return self._topic_sets.get(topics, topics)

    def bytes_to_group(self, sink: Sink) -> int:
        """Bytes written so far to the group ``sink`` is in (0 when it is in none): a
        running total per group, so a subscriber can count what it was sent from two
        readings instead of a counter on every write (that cost ~3% of a delivery)."""
        return self._group_bytes.get((sink.topics, sink.framing), 0)

    def add(self, sink: Sink) -> None:
        key: GroupKey = (sink.topics, sink.framing)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = {}
            if sink.topics is None:
                self._wildcard.add(key)
            else:
                self._topic_sets.setdefault(sink.topics, sink.topics)
                self._topic_set_groups[sink.topics] = self._topic_set_groups.get(sink.topics, 0) + 1
                for topic in sink.topics:
                    self._by_topic.setdefault(topic, set()).add(key)
        if sink not in group:
            group[sink] = None
            self._count += 1
            self._gathering.pop(key, None)  # its members are fixed: the newcomer is not one

    def remove(self, sink: Sink) -> None:
        key: GroupKey = (sink.topics, sink.framing)
        group = self._groups.get(key)
        if group is None or sink not in group:
            return
        del group[sink]
        self._count -= 1
        if group:
            return
        del self._groups[key]
        self._group_bytes.pop(key, None)
        self._gathering.pop(key, None)
        if sink.topics is None:
            self._wildcard.discard(key)
            return
        for topic in sink.topics:
            keys = self._by_topic[topic]
            keys.discard(key)
            if not keys:
                del self._by_topic[topic]
        users = self._topic_set_groups[sink.topics] - 1
        if users:
            self._topic_set_groups[sink.topics] = users
        else:
            del self._topic_set_groups[sink.topics]
            del self._topic_sets[sink.topics]

    def publish(self, frame: Frame) -> None:
        """Queue ``frame`` for delivery at the next loop iteration."""
        self._pending.append(frame)
        self.stats.published += 1
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def broadcast(self, data: bytes) -> None:
        """Send ``data`` to every sink, after everything queued before it (a broker's
        ``reset`` when its history starts over). Rare, so it plans its own writes instead
        of costing the hot path a check per frame."""
        self.settle()
        for key, group in self._groups.items():
            self._gathering.pop(key, None)  # what comes later must follow this write
            self._writes.append(_Write(key, tuple(group), [data]))
        if self._writes and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def flush(self) -> None:
        """Deliver everything queued, now, however much it is (at shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        while self._pending or self._writes:
            self._deliver(None)

    def settle(self) -> None:
        """Fix who gets what is queued: a sink added after this gets only frames published
        later. Nothing is written: a subscriber's snapshot needs no more than this, so a
        big pass under way to laggards does not hold up the one who subscribes (that
        cost 0.5 s while 5,000 laggards were being written to)."""
        if self._pending:
            self._plan()

    def _flush_soon(self) -> None:
        """The scheduled delivery: about :data:`PASS_SECONDS` of writing per iteration."""
        self._flush_handle = None
        self._deliver(time.perf_counter() + PASS_SECONDS)
        if self._pending or self._writes:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def _deliver(self, deadline: float | None) -> None:
        """Write what is planned (and plan what is queued) until ``deadline`` (``None``:
        all of it). A group whose write is left unfinished keeps its later writes behind
        it (its members get every frame in order); other groups go on, so the events of
        everyone else do not wait for a huge pass to laggards."""
        if self._pending:
            self._plan()
        unfinished: set[GroupKey] = set()
        left: deque[_Write] = deque()
        for write in self._writes:
            if write.key in unfinished or not self._write_until(write, deadline):
                unfinished.add(write.key)
                left.append(write)
        self._writes = left

    def _plan(self) -> None:
        """Turn what is queued into one write per group with the members as they are now
        (a sink may remove itself while we write), or add it to the group's write that
        waits behind an unfinished one."""
        pending, self._pending = self._pending, []
        frames_by_group: dict[GroupKey, list[bytes]] = {}
        wildcard = self._wildcard
        by_topic = self._by_topic
        for frame in pending:
            for key in by_topic.get(frame.topic, ()):
                frames_by_group.setdefault(key, []).append(frame.data)
            for key in wildcard:
                frames_by_group.setdefault(key, []).append(frame.data)
        stats = self.stats
        gathering = self._gathering
        for key, frames in frames_by_group.items():
            write = gathering.get(key)
            if write is not None and write.size < CHECK_BYTES:
                write.frames += frames
                write.size += sum(map(len, frames))
            else:
                write = gathering[key] = _Write(key, tuple(self._groups[key]), frames)
                self._writes.append(write)
            stats.delivered += len(write.members) * len(frames)

    def _write_until(self, write: _Write, deadline: float | None) -> bool:
        """Write ``write`` to its members, stopping once ``deadline`` has passed (looked at
        every :data:`CHECK_EVERY` members, or every :data:`CHECK_BYTES` of writes when that
        is fewer: 64 writes of 800 KB are 50 MB); True when every member has it."""
        data = write.data
        members = write.members
        if data is None:  # it starts: nothing joins it any more
            if self._gathering.get(write.key) is write:
                del self._gathering[write.key]
            frames = write.frames
            data = write.data = write.key[1](frames[0] if len(frames) == 1 else b"".join(frames))
            write.frames = []
            self._group_bytes[write.key] = self._group_bytes.get(write.key, 0) + len(data)
            self.stats.bytes_sent += len(members) * len(data)
        start = write.next
        every = min(CHECK_EVERY, max(1, CHECK_BYTES // len(data)))
        if deadline is None or len(members) - start <= every:
            for sink in members[start:] if start else members:
                sink.send(data)
            return True
        clock = time.perf_counter
        for index in range(start, len(members), every):
            for sink in members[index : index + every]:
                sink.send(data)
            if clock() > deadline:
                done = write.next = index + every
                return done >= len(members)
        return True
