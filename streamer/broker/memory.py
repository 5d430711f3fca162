"""The default broker: one process, no dependencies.

Ids are ``<epoch>-<seq>``: ``epoch`` is the process start time in
milliseconds and ``seq`` counts events from 1. They increase strictly within
a process, and a restarted process starts a later epoch, so an id is never
reused (as long as the wall clock does not run backwards across a restart).
An id from another epoch cannot be resumed: its events died with the old
process, so the subscriber gets ``reset``.

History is kept in *lanes*: one for every topic by default, plus one per
topic given its own (the media folder's ``files`` events), each bounded on
its own. A burst of file changes then cannot push published events out of
resume history, and a lane only matters to the subscribers of its topics: a
``files`` subscriber is not reset because the main lane was trimmed.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Mapping

from ..errors import BrokerClosed
from ..fanout import Fanout, Frame, Sink
from ..sse import encode_event
from .history import History, offset_of
from .model import Event, Health, Position, Resume


class MemoryBroker:
    """Ordered in-memory log; see the module docstring for ids and lanes."""

    kind = "memory"

    def __init__(
        self,
        fanout: Fanout,
        history: int = 10_000,
        history_bytes: int = 64 << 20,
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        self.epoch = time.time_ns() // 1_000_000
        self.fanout = fanout
        self._seq = 0
        self._closed = False
        self._main = History(history, history_bytes)
        self._own_lanes = {
            topic: History(limit, history_bytes) for topic, limit in (lanes or {}).items()
        }

    @property
    def head(self) -> Position:
        return Position(self.epoch, self._seq)

    async def publish(self, topic: str, data: str, event: str = "message") -> Event:
        if self._closed:
            raise BrokerClosed("the broker is closed")
        seq = self._seq + 1
        # the id as str(Position) spells it, formatted inline: this runs once per publish;
        # the id is taken only once the event is encoded, so a failure leaves no hole
        frame = Frame(topic, encode_event(f"{self.epoch}-{seq}", event, data))
        self._seq = seq
        item = Event(Position(self.epoch, seq), frame)
        self._own_lanes.get(topic, self._main).append(item)
        self.fanout.publish(item.frame)
        return item

    async def subscribe(self, sink: Sink, last_event_id: str | None) -> Resume:
        if self._closed:
            raise BrokerClosed("the broker is closed")
        # No await in here: the snapshot and the registration happen at one
        # instant, so no event can fall between replay and live delivery.
        self.fanout.settle()  # queued events are in history: the new sink must not get them
        resume = self._resume(sink.topics, last_event_id)
        self.fanout.add(sink)
        return resume

    def unsubscribe(self, sink: Sink) -> None:
        self.fanout.remove(sink)

    def health(self) -> Health:
        return Health(self.kind, "closed" if self._closed else "ok")

    def leads(self) -> bool:
        return True  # the only process there is

    async def aclose(self) -> None:
        self._closed = True
        self.fanout.flush()

    def _lanes_for(self, topics: frozenset[str] | None) -> list[History]:
        """The lanes that can hold events of ``topics`` (``None``: every topic)."""
        if topics is None:
            return [self._main, *self._own_lanes.values()]
        lanes = [lane for topic, lane in self._own_lanes.items() if topic in topics]
        if any(topic not in self._own_lanes for topic in topics):
            lanes.append(self._main)
        return lanes

    def _resume(self, topics: frozenset[str] | None, last_event_id: str | None) -> Resume:
        head = self.head
        if not last_event_id:
            return Resume([], None, head)
        position = Position.parse(last_event_id)
        if position is None:
            return Resume([], "malformed", head)
        if position.epoch != self.epoch:
            return Resume([], "epoch", head)
        seq = position.offset
        if seq > self._seq:
            return Resume([], "unknown", head)
        lanes = self._lanes_for(topics)
        if not all(lane.covers(seq) for lane in lanes):
            return Resume([], "too-old", head)
        missed: Iterable[Event]
        if len(lanes) == 1:
            missed = lanes[0].after(seq)
        else:
            missed = heapq.merge(*(lane.after(seq) for lane in lanes), key=offset_of)
        replay = [e.frame.data for e in missed if topics is None or e.frame.topic in topics]
        return Resume(replay, None, head)
