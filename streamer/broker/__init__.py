"""The broker: an ordered log of events with ids and bounded history.

A broker assigns each published event its position, encodes it once (see
:mod:`streamer.sse`), keeps a bounded history for resume, and hands the
frame to the :class:`~streamer.fanout.Fanout` it was given, which delivers it
to local subscribers. The web layer sees only the :class:`Broker` protocol;
the contract tests (``tests/test_broker_contract.py``) are its definition and
run against every implementation: ``memory`` (one process, the default) and
``redis`` (Redis Streams, shared by every worker and host on one Redis).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from ..errors import BrokerClosed, BrokerUnavailable, StartupError
from ..fanout import Fanout, Sink
from ..settings import Settings
from .model import Event, Health, Position, Resume

if TYPE_CHECKING:
    from .redis import RedisBroker

__all__ = [
    "Broker",
    "BrokerClosed",
    "BrokerUnavailable",
    "Event",
    "Health",
    "Position",
    "Resume",
    "check_broker",
    "open_broker",
]


class Broker(Protocol):
    """What the web layer needs from a broker, whichever one runs."""

    kind: str  # "memory", "redis"

    async def publish(self, topic: str, data: str, event: str = "message") -> Event:
        """Append an event to the log and schedule its delivery; returns it with its id.
        Raises :class:`BrokerClosed` after :meth:`aclose`, :class:`BrokerUnavailable`
        while the broker's store cannot be reached (at once: no request waits for it)."""
        ...

    async def subscribe(self, sink: Sink, last_event_id: str | None) -> Resume:
        """Register ``sink`` for live events and return what it missed since
        ``last_event_id`` (``None``: nothing, it starts live).

        Every event is either in the returned replay or sent to the sink
        afterwards, never both and never neither. Raises :class:`BrokerClosed`
        after :meth:`aclose`, :class:`BrokerUnavailable` when what was missed can only
        be read from a store that cannot be reached now.
        """
        ...

    def unsubscribe(self, sink: Sink) -> None:
        """Stop sending to ``sink`` (idempotent)."""
        ...

    def health(self) -> Health:
        """The broker's state, cheap enough to ask on every ``/healthz``."""
        ...

    def leads(self) -> bool:
        """Whether this process is the one (of every worker and host on this broker) that
        publishes the events of shared sources, such as the media folder's changes: each
        change is then one event, however many processes watch the folder."""
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
    busy topic cannot push the others' events out of resume history: the memory
    broker's; the Redis broker has one stream for every topic.
    """
    broker: Broker
    if settings.broker == "memory":
        from .memory import MemoryBroker

        broker = MemoryBroker(
            fanout, history=settings.history, history_bytes=settings.history_bytes, lanes=lanes
        )
    else:  # a Redis URL: settings checked it
        redis_broker: RedisBroker = _redis_module().RedisBroker(
            settings.broker,
            fanout,
            prefix=settings.redis_prefix,
            history=settings.history,
            history_bytes=settings.history_bytes,
        )
        try:
            await redis_broker.start()
        except BrokerUnavailable as exc:
            await redis_broker.aclose()
            raise StartupError(cannot_reach(settings.broker, exc)) from None
        except BaseException:  # a Redis too old, or the start was cancelled
            await redis_broker.aclose()
            raise
        broker = redis_broker
    try:
        yield broker
    finally:
        await broker.aclose()


async def check_broker(settings: Settings) -> None:
    """Raise :class:`StartupError` (one line) when the broker cannot be used: before
    several workers are started, so that one line is printed, not one per worker."""
    if settings.broker == "memory":
        return
    try:
        await _redis_module().ping(settings.broker)
    except BrokerUnavailable as exc:
        raise StartupError(cannot_reach(settings.broker, exc)) from None


def _redis_module() -> ModuleType:
    """:mod:`streamer.broker.redis`, or one clear line when redis-py is not installed."""
    try:
        from . import redis
    except ImportError:  # redis-py is an extra
        raise StartupError(
            "--broker redis:// needs the redis package: pip install 'streamer[redis]'"
        ) from None
    return redis


def cannot_reach(url: str, exc: BrokerUnavailable) -> str:
    return f"cannot reach Redis at {_redis_module().shown_url(url)}: {exc}"
