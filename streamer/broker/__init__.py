"""The broker: an ordered log of events with ids and bounded history.

A broker assigns each published event its position, encodes it once (see
:mod:`streamer.sse`), keeps a bounded history for resume, and hands the
frame to the :class:`~streamer.fanout.Fanout` it was given, which delivers it
to local subscribers. The web layer sees only the :class:`Broker` protocol;
the contract tests (``tests/test_broker_contract.py``) are its definition and
run against every implementation. Only the memory broker exists so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from ..errors import BrokerClosed
from ..fanout import Fanout, Sink
from ..settings import Settings
from .model import Event, Health, Position, Resume

__all__ = [
    "Broker",
    "BrokerClosed",
    "Event",
    "Health",
    "Position",
    "Resume",
    "open_broker",
]


class Broker(Protocol):
    """What the web layer needs from a broker, whichever one runs."""

    async def publish(self, topic: str, data: str, event: str = "message") -> Event:
        """Append an event to the log and schedule its delivery; returns it with its id.
        Raises :class:`BrokerClosed` after :meth:`aclose`."""
        ...

    async def subscribe(self, sink: Sink, last_event_id: str | None) -> Resume:
        """Register ``sink`` for live events and return what it missed since
        ``last_event_id`` (``None``: nothing, it starts live).

        Every event is either in the returned replay or sent to the sink
        afterwards, never both and never neither. Raises :class:`BrokerClosed`
        after :meth:`aclose`.
        """
        ...

    def unsubscribe(self, sink: Sink) -> None:
        """Stop sending to ``sink`` (idempotent)."""
        ...

    def health(self) -> Health:
        """The broker's state, cheap enough to ask on every ``/healthz``."""
        ...

    async def aclose(self) -> None:
        """Deliver what is queued, then accept nothing more (idempotent)."""
        ...


@contextlib.asynccontextmanager
async def open_broker(
    settings: Settings, fanout: Fanout, lanes: Mapping[str, int] | None = None
) -> AsyncIterator[Broker]:
    """The broker named by ``settings.broker``, delivering through ``fanout``; closed on exit.

    ``lanes`` gives topics a history of their own (that many events at most), so a
    busy topic cannot push the others' events out of resume history.
    """
    from .memory import MemoryBroker

    broker = MemoryBroker(
        fanout, history=settings.history, history_bytes=settings.history_bytes, lanes=lanes
    )
    try:
        yield broker
    finally:
        await broker.aclose()
