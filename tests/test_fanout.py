"""The fan-out registry and its coalescing, with recording sinks (no sockets needed)."""

from __future__ import annotations

import asyncio

from streamer.broker import Event, Fanout
from streamer.broker.memory import MemoryBroker


def framed(data: bytes) -> bytes:
    return b"[" + data + b"]"


def plain(data: bytes) -> bytes:
    return data


class RecordingSink:
    def __init__(self, topics: frozenset[str] | None, framing=plain) -> None:
        self.topics = topics
        self.framing = framing
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.writes.append(data)


def event(seq: int, topic: str) -> Event:
    return Event(f"1-{seq}", seq, topic, f"<{topic}{seq}>".encode())


async def test_events_of_one_iteration_are_one_write_per_group() -> None:
    fanout = Fanout()
    a = RecordingSink(frozenset({"a"}))
    a_framed = RecordingSink(frozenset({"a"}), framed)
    ab = RecordingSink(frozenset({"a", "b"}))
    everything = RecordingSink(None)
    for sink in (a, a_framed, ab, everything):
        fanout.add(sink)
    for seq, topic in enumerate(["a", "b", "c", "a"], 1):
        fanout.publish(event(seq, topic))
    assert a.writes == []  # nothing is written synchronously by publish
    await asyncio.sleep(0)  # one loop iteration
    assert a.writes == [b"<a1><a4>"]
    assert a_framed.writes == [b"[<a1><a4>]"]
    assert ab.writes == [b"<a1><b2><a4>"]
    assert everything.writes == [b"<a1><b2><c3><a4>"]
    assert fanout.stats.published == 4
    assert fanout.stats.delivered == 2 + 2 + 3 + 4


async def test_same_bytes_object_goes_to_every_member_of_a_group() -> None:
    fanout = Fanout()
    sinks = [RecordingSink(frozenset({"t"})) for _ in range(3)]
    for sink in sinks:
        fanout.add(sink)
    fanout.publish(event(1, "t"))
    fanout.flush()
    assert sinks[0].writes[0] is sinks[1].writes[0] is sinks[2].writes[0]


async def test_registry_cleans_up_groups_and_shares_topic_sets() -> None:
    fanout = Fanout()
    first = RecordingSink(frozenset({"x", "y"}))
    fanout.add(first)
    equal = fanout.shared_topics(frozenset({"y", "x"}))
    assert equal is first.topics
    second = RecordingSink(equal)
    fanout.add(second)
    fanout.add(second)  # idempotent
    assert len(fanout) == 2
    fanout.remove(first)
    fanout.remove(first)  # idempotent
    fanout.remove(second)
    assert len(fanout) == 0
    assert fanout._groups == {}
    assert fanout._by_topic == {}
    assert fanout._topic_sets == {}


async def test_a_sink_may_remove_itself_while_being_written() -> None:
    fanout = Fanout()

    class Quitter(RecordingSink):
        def send(self, data: bytes) -> None:
            super().send(data)
            fanout.remove(self)

    sinks = [Quitter(None) for _ in range(3)]
    for sink in sinks:
        fanout.add(sink)
    fanout.publish(event(1, "t"))
    fanout.flush()
    assert all(sink.writes == [b"<t1>"] for sink in sinks)
    assert len(fanout) == 0


async def test_history_is_bounded_by_bytes_too() -> None:
    broker = MemoryBroker(history=100, history_bytes=200)
    for _ in range(10):
        await broker.publish("t", "x" * 50)
    kept = list(broker._history)
    assert sum(len(e.frame) for e in kept) <= 200
    assert [e.seq for e in kept] == list(range(11 - len(kept), 11))
    resume = await broker.subscribe(RecordingSink(None), kept[0].id)
    assert resume.reset is None
    assert len(resume.replay) == len(kept) - 1
    too_old = await broker.subscribe(RecordingSink(None), f"{broker.epoch}-1")
    assert too_old.reset == "too-old"


async def test_subscribe_delivers_queued_events_first_so_none_is_doubled() -> None:
    broker = MemoryBroker()
    old = RecordingSink(None)
    await broker.subscribe(old, None)
    first = await broker.publish("t", "one")
    await broker.publish("t", "two")  # queued, not yet flushed
    new = RecordingSink(None)
    resume = await broker.subscribe(new, first.id)
    await asyncio.sleep(0)
    assert len(resume.replay) == 1  # "two" comes from history...
    assert new.writes == []  # ...and not again from the fan-out
    assert len(old.writes) == 1  # the older subscriber got both, coalesced
