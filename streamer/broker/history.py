"""Bounded history: the events a broker keeps in memory for resume, by count and bytes.

The memory broker keeps all of its history in these; the Redis broker keeps the
newest events its reader delivered in one, so most reconnects are answered
without a round trip to Redis (a reconnect storm of 10,000 clients after a
blip costs Redis nothing), and with exactly the memory broker's bounds.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator

from .model import Event


def offset_of(event: Event) -> int:
    return event.position.offset


class History:
    """Events in offset order, at most ``limit`` of them and about ``byte_limit`` bytes
    (always the newest one). ``trimmed`` is the offset of the newest event dropped, or
    where the history starts: every event after it is here."""

    __slots__ = ("byte_limit", "events", "limit", "size", "trimmed")

    def __init__(self, limit: int, byte_limit: int, start: int = 0) -> None:
        self.events: deque[Event] = deque()
        self.limit = limit
        self.byte_limit = byte_limit
        self.size = 0
        self.trimmed = start

    def append(self, event: Event) -> None:
        events = self.events
        events.append(event)
        self.size += len(event.frame.data)
        while len(events) > self.limit or (self.size > self.byte_limit and len(events) > 1):
            dropped = events.popleft()
            self.size -= len(dropped.frame.data)
            self.trimmed = dropped.position.offset

    def covers(self, offset: int) -> bool:
        """Whether every event after ``offset`` is here."""
        return offset >= self.trimmed

    def after(self, offset: int) -> Iterator[Event]:
        events = self.events
        start = bisect.bisect_right(events, offset, key=offset_of)
        for index in range(start, len(events)):
            yield events[index]
