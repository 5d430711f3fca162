"""The broker contract: what every broker must do, written against the Protocol only.

This suite is the definition of "a broker". It runs against every
implementation listed in :data:`BROKERS`: the memory broker, and the Redis
broker on a real redis-server (one for the session; each test has a key
prefix of its own). Sinks record what the broker's fan-out sends them; ids
are only ever compared through :class:`~streamer.broker.Position`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from streamer.broker import Broker, BrokerClosed, Position, Resume
from streamer.broker.memory import MemoryBroker
from streamer.broker.redis import RedisBroker
from streamer.fanout import Fanout
from streamer.sse import ParsedEvent, parse_stream

from .helpers import RecordingSink
from .redis_support import RedisServer


class OpenBroker(Protocol):
    def __call__(self, **options: Any) -> contextlib.AbstractAsyncContextManager[Broker]: ...


@contextlib.asynccontextmanager
async def memory_broker(**options: Any) -> AsyncIterator[Broker]:
    broker = MemoryBroker(Fanout(), **options)
    try:
        yield broker
    finally:
        await broker.aclose()


def redis_broker(url: str, prefix: str) -> OpenBroker:
    @contextlib.asynccontextmanager
    async def opener(**options: Any) -> AsyncIterator[Broker]:
        broker = RedisBroker(url, Fanout(), prefix=prefix, **options)
        await broker.start()
        try:
            yield broker
        finally:
            await broker.aclose()

    return opener


BROKERS = ["memory", "redis"]


@pytest.fixture(params=BROKERS)
def open_broker(request: pytest.FixtureRequest, redis_prefix: str) -> OpenBroker:
    """Opens a fresh broker of each kind; options: ``history``, ``history_bytes``."""
    if request.param == "memory":
        return memory_broker
    redis: RedisServer = request.getfixturevalue("redis_server")
    return redis_broker(redis.url, redis_prefix)


def received(sink: RecordingSink, resume: Resume | None = None) -> list[ParsedEvent]:
    """Everything the subscriber got, replay first, as a client would parse it."""
    replay = b"".join(resume.replay) if resume is not None else b""
    return list(parse_stream((replay + b"".join(sink.writes)).decode()))


async def settle(broker: Broker) -> None:
    """Let queued deliveries happen: a round trip through the broker itself."""
    probe = RecordingSink(frozenset({"settle.probe"}))
    await broker.subscribe(probe, None)
    event = await broker.publish("settle.probe", "x")
    async with asyncio.timeout(5):
        while not any(e.id == event.id for e in received(probe)):
            probe.arrived.clear()
            await probe.arrived.wait()
    broker.unsubscribe(probe)


def offset(event_id: str | None) -> tuple[int, int]:
    assert event_id is not None
    position = Position.parse(event_id)
    assert position is not None, event_id
    return position.epoch, position.offset


async def test_ids_are_positions_that_strictly_increase(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        events = [await broker.publish(f"t{n % 3}", str(n)) for n in range(50)]
    positions = [e.position for e in events]
    assert [Position.parse(e.id) for e in events] == positions
    assert len({p.epoch for p in positions}) == 1
    assert all(a < b for a, b in itertools.pairwise(positions))


async def test_live_events_reach_subscribers_of_their_topics(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        a, ab, every = RecordingSink(frozenset({"a"})), RecordingSink(frozenset({"a", "b"})), None
        everything = RecordingSink(every)
        for sink in (a, ab, everything):
            resume = await broker.subscribe(sink, None)
            assert (resume.replay, resume.reset) == ([], None)
        published = [await broker.publish(topic, topic) for topic in "abca"]
        await settle(broker)
        ids = [e.id for e in published]
        assert [e.id for e in received(a)] == [ids[0], ids[3]]
        assert [e.id for e in received(ab)] == [ids[0], ids[1], ids[3]]
        assert [e.id for e in received(everything) if e.data != "x"] == ids


async def test_replay_then_live_is_exactly_once_with_concurrent_publishers(
    open_broker: OpenBroker,
) -> None:
    """Subscribers join at random moments, resuming from random earlier ids, while four
    publishers keep publishing: each gets every event after its id once, in order."""
    rng = random.Random(7)
    async with open_broker() as broker:
        published: list[str] = []
        progress = asyncio.Event()  # set by each publish: joins happen while they go on

        async def publisher(name: str) -> None:
            for n in range(100):
                published.append((await broker.publish("feed", f"{name}{n}")).id)
                progress.set()
                if rng.random() < 0.3:
                    await asyncio.sleep(0)

        joined: list[tuple[str, RecordingSink, Resume]] = []

        async def joiner() -> None:
            for _ in range(30):
                progress.clear()
                await progress.wait()
                since = rng.choice(published)
                sink = RecordingSink(frozenset({"feed"}))
                joined.append((since, sink, await broker.subscribe(sink, since)))

        await asyncio.gather(*(publisher(p) for p in "pqrs"), joiner())
        await settle(broker)
        assert len(published) == 400
        published.sort(key=lambda event_id: offset(event_id))  # id order, not completion order
        assert joined
        for since, sink, resume in joined:
            assert resume.reset is None
            got = [e.id for e in received(sink, resume)]
            assert got == published[published.index(since) + 1 :]


async def test_replay_applies_the_topic_filter(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        first = await broker.publish("a", "first")
        rest = [await broker.publish(topic, topic) for topic in "abcab"]
        sink = RecordingSink(frozenset({"a", "c"}))
        resume = await broker.subscribe(sink, first.id)
        assert [e.data for e in received(sink, resume)] == ["a", "c", "a"]
        assert resume.head_id == rest[-1].id


@pytest.mark.parametrize(
    "bad",
    ["nonsense", "", "1-", "-1", "1-2-3", "1-x", "\u0661-\u0662", "9" * 30 + "-1", "1-" + "9" * 30],
)
async def test_a_malformed_id_is_a_reset_from_the_head(open_broker: OpenBroker, bad: str) -> None:
    async with open_broker() as broker:
        head = await broker.publish("t", "one")
        resume = await broker.subscribe(RecordingSink(None), bad)
        if bad == "":  # no id at all: a fresh subscriber, not a reset
            assert (resume.reset, resume.replay) == (None, [])
        else:
            assert (resume.reset, resume.replay, resume.head_id) == ("malformed", [], head.id)


async def test_ids_of_another_epoch_or_from_the_future_are_resets(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        head = await broker.publish("t", "one")
        epoch, seq = offset(head.id)
        cases = {
            str(Position(epoch + 1, seq)): "epoch",
            str(Position(epoch - 1, seq)): "epoch",
            str(Position(epoch, seq + 1)): "unknown",
        }
        for last_id, reason in cases.items():
            resume = await broker.subscribe(RecordingSink(None), last_id)
            assert (resume.reset, resume.replay, resume.head_id) == (reason, [], head.id)


async def test_history_is_bounded_by_count(open_broker: OpenBroker) -> None:
    async with open_broker(history=5) as broker:
        ids = [(await broker.publish("t", str(n))).id for n in range(12)]
        resume = await broker.subscribe(RecordingSink(None), ids[-6])  # 5 missed: all kept
        assert resume.reset is None
        assert [e.id for e in received(RecordingSink(None), resume)] == ids[-5:]
        too_old = await broker.subscribe(RecordingSink(None), ids[-7])  # 6 missed: one gone
        assert (too_old.reset, too_old.replay, too_old.head_id) == ("too-old", [], ids[-1])


async def test_history_is_bounded_by_bytes(open_broker: OpenBroker) -> None:
    async with open_broker(history=1000, history_bytes=2000) as broker:
        ids = [(await broker.publish("t", "x" * 100)).id for n in range(100)]
        resume = await broker.subscribe(RecordingSink(None), ids[0])
        assert resume.reset == "too-old"
        kept = 0
        for since in reversed(ids[:-1]):
            resume = await broker.subscribe(RecordingSink(None), since)
            if resume.reset is not None:
                break
            kept += 1
            assert sum(len(frame) for frame in resume.replay) <= 2000
        assert 5 <= kept < 20  # ~140-byte frames in 2000 bytes


async def test_a_subscriber_resuming_from_the_head_gets_only_live_events(
    open_broker: OpenBroker,
) -> None:
    async with open_broker() as broker:
        head = await broker.publish("t", "one")
        sink = RecordingSink(frozenset({"t"}))
        resume = await broker.subscribe(sink, head.id)
        assert (resume.replay, resume.reset) == ([], None)
        live = await broker.publish("t", "two")
        await settle(broker)
        assert [e.id for e in received(sink)] == [live.id]


async def test_unsubscribe_is_idempotent_and_stops_delivery(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        sink = RecordingSink(frozenset({"t"}))
        broker.unsubscribe(sink)  # never subscribed: nothing happens
        await broker.subscribe(sink, None)
        broker.unsubscribe(sink)
        broker.unsubscribe(sink)
        await broker.publish("t", "after")
        await settle(broker)
        assert sink.writes == []


async def test_close_delivers_what_is_queued_then_refuses(open_broker: OpenBroker) -> None:
    async with open_broker() as broker:
        assert broker.health().ok
        sink = RecordingSink(None)
        await broker.subscribe(sink, None)
        last = await broker.publish("t", "last words")
        await broker.aclose()
        assert [e.id for e in received(sink)] == [last.id]
        await broker.aclose()  # idempotent
        assert not broker.health().ok
        with pytest.raises(BrokerClosed):
            await broker.publish("t", "too late")
        with pytest.raises(BrokerClosed):
            await broker.subscribe(RecordingSink(None), None)
        broker.unsubscribe(sink)  # still fine


# -- the memory broker's own promises --------------------------------------------------------


async def test_a_topic_with_its_own_lane_cannot_push_others_out_of_history() -> None:
    async with memory_broker(history=10, lanes={"files": 3}) as broker:
        first = await broker.publish("news", "first")
        news = [(await broker.publish("news", str(n))).id for n in range(5)]
        for n in range(100):  # a burst of file changes
            await broker.publish("files", str(n))
        everything = await broker.subscribe(RecordingSink(None), first.id)
        assert everything.reset == "too-old"  # it missed files events that are gone
        only_news = RecordingSink(frozenset({"news"}))
        resume = await broker.subscribe(only_news, first.id)
        assert resume.reset is None
        assert [e.id for e in received(only_news, resume)] == news
        files = RecordingSink(frozenset({"files"}))
        last_files = await broker.publish("files", "new")
        resume = await broker.subscribe(files, news[-1])
        assert resume.reset == "too-old"  # 100 file events, 3 kept
        resume = await broker.subscribe(files, str(Position.parse(last_files.id)))
        assert (resume.reset, resume.replay) == (None, [])


async def test_replay_across_lanes_is_in_id_order() -> None:
    async with memory_broker(lanes={"files": 100}) as broker:
        first = await broker.publish("news", "start")
        ids = [(await broker.publish(topic, topic)).id for topic in ["files", "news"] * 5]
        sink = RecordingSink(None)
        resume = await broker.subscribe(sink, first.id)
        assert [e.id for e in received(sink, resume)] == ids
