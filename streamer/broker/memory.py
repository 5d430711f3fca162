"""The default broker: one process, no dependencies.

Ids are ``<epoch>-<seq>``: ``epoch`` is the process start time in
milliseconds and ``seq`` counts events from 1. They increase strictly within
a process, and a restarted process starts a later epoch, so an id is never
reused (as long as the wall clock does not run backwards across a restart).
An id from another epoch cannot be resumed: its events died with the old
process, so the subscriber gets ``reset``.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque

from ..sse import encode_event
from .fanout import Fanout, Sink
from .model import Event, Resume

_ID = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")


class MemoryBroker:
    """Ordered in-memory log bounded by event count and by bytes."""

    def __init__(self, history: int = 10_000, history_bytes: int = 64 << 20) -> None:
        self.epoch = time.time_ns() // 1_000_000
        self.fanout = Fanout()
        self._seq = 0
        self._history: deque[Event] = deque()
        self._history_limit = history
        self._history_bytes_limit = history_bytes
        self._history_bytes = 0

    @property
    def head_id(self) -> str:
        return f"{self.epoch}-{self._seq}"

    async def publish(self, topic: str, data: str, event: str = "message") -> Event:
        self._seq += 1
        event_id = f"{self.epoch}-{self._seq}"
        item = Event(event_id, self._seq, topic, encode_event(event_id, event, data))
        self._remember(item)
        self.fanout.publish(item)
        return item

    async def subscribe(self, sink: Sink, last_event_id: str | None) -> Resume:
        # No await in here: the snapshot and the registration happen at one
        # instant, so no event can fall between replay and live delivery.
        self.fanout.flush()  # queued events are in history; deliver them to the others first
        resume = self._resume(sink.topics, last_event_id)
        self.fanout.add(sink)
        return resume

    def unsubscribe(self, sink: Sink) -> None:
        self.fanout.remove(sink)

    def _remember(self, item: Event) -> None:
        history = self._history
        history.append(item)
        self._history_bytes += len(item.frame)
        while len(history) > self._history_limit or (
            self._history_bytes > self._history_bytes_limit and len(history) > 1
        ):
            self._history_bytes -= len(history.popleft().frame)

    def _resume(self, topics: frozenset[str] | None, last_event_id: str | None) -> Resume:
        if not last_event_id:
            return Resume([], None, self.head_id)
        match = _ID.fullmatch(last_event_id)
        if match is None:
            return Resume([], "malformed", self.head_id)
        epoch, seq = int(match[1]), int(match[2])
        if epoch != self.epoch:
            return Resume([], "epoch", self.head_id)
        if seq > self._seq:
            return Resume([], "unknown", self.head_id)
        oldest = self._history[0].seq if self._history else self._seq + 1
        if seq + 1 < oldest:
            return Resume([], "too-old", self.head_id)
        missed = itertools.islice(self._history, seq + 1 - oldest, None)
        replay = [e.frame for e in missed if topics is None or e.topic in topics]
        return Resume(replay, None, self.head_id)
