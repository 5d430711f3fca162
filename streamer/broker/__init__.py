"""The broker: an ordered log of events with ids, bounded history and fan-out.

A broker assigns each published event its id, encodes it once (see
:mod:`streamer.sse`), keeps a bounded history for resume, and hands the same
bytes to every local subscriber whose topic filter matches (see
:mod:`streamer.broker.fanout`). Only the memory broker exists so far; a Redis
Streams broker will implement the same :class:`Broker` protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from ..settings import Settings
from .fanout import Fanout, FanoutStats, Framing, Sink
from .model import Event, Resume

__all__ = [
    "Broker",
    "Event",
    "Fanout",
    "FanoutStats",
    "Framing",
    "Resume",
    "Sink",
    "open_broker",
]


class Broker(Protocol):
    """What the web layer needs from a broker."""

    fanout: Fanout

    async def publish(self, topic: str, data: str, event: str = "message") -> Event:
        """Append an event to the log and schedule its delivery; returns it with its id."""
        ...

    async def subscribe(self, sink: Sink, last_event_id: str | None) -> Resume:
        """Register ``sink`` for live events and return what it missed.

        Every event is either in the returned replay or sent to the sink
        afterwards, never both and never neither.
        """
        ...

    def unsubscribe(self, sink: Sink) -> None:
        """Stop sending to ``sink`` (idempotent)."""
        ...


@contextlib.asynccontextmanager
async def open_broker(settings: Settings) -> AsyncIterator[Broker]:
    """Create the broker named by ``settings.broker`` and close it on exit."""
    from .memory import MemoryBroker

    broker = MemoryBroker(history=settings.history, history_bytes=settings.history_bytes)
    try:
        yield broker
    finally:
        broker.fanout.flush()
