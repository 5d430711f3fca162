"""The fan-out registry and its coalescing, with recording sinks (no sockets needed)."""

from __future__ import annotations

import asyncio
import time

from streamer.fanout import CHECK_EVERY, Fanout, Frame

from .helpers import RecordingSink


def framed(data: bytes) -> bytes:
    return b"[" + data + b"]"


def frame(seq: int, topic: str) -> Frame:
    return Frame(topic, f"<{topic}{seq}>".encode())


async def test_frames_of_one_iteration_are_one_write_per_group() -> None:
    fanout = Fanout()
    a = RecordingSink(frozenset({"a"}))
    a_framed = RecordingSink(frozenset({"a"}), framed)
    ab = RecordingSink(frozenset({"a", "b"}))
    everything = RecordingSink(None)
    for sink in (a, a_framed, ab, everything):
        fanout.add(sink)
    for seq, topic in enumerate(["a", "b", "c", "a"], 1):
        fanout.publish(frame(seq, topic))
    assert a.writes == []  # nothing is written synchronously by publish
    await asyncio.sleep(0)  # one loop iteration
    assert a.writes == [b"<a1><a4>"]
    assert a_framed.writes == [b"[<a1><a4>]"]
    assert ab.writes == [b"<a1><b2><a4>"]
    assert everything.writes == [b"<a1><b2><c3><a4>"]
    assert fanout.stats.published == 4
    assert fanout.stats.delivered == 2 + 2 + 3 + 4
    assert fanout.stats.bytes_sent == sum(len(s.writes[0]) for s in (a, a_framed, ab, everything))


async def test_same_bytes_object_goes_to_every_member_of_a_group() -> None:
    fanout = Fanout()
    sinks = [RecordingSink(frozenset({"t"})) for _ in range(3)]
    for sink in sinks:
        fanout.add(sink)
    fanout.publish(frame(1, "t"))
    fanout.flush()
    assert sinks[0].writes[0] is sinks[1].writes[0] is sinks[2].writes[0]


async def test_nothing_is_delivered_to_topics_nobody_follows() -> None:
    fanout = Fanout()
    sink = RecordingSink(frozenset({"t"}))
    fanout.add(sink)
    fanout.publish(frame(1, "other"))
    fanout.flush()
    assert sink.writes == []
    assert fanout.stats.delivered == 0


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
    assert set(fanout.sinks()) == {first, second}
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
    fanout.publish(frame(1, "t"))
    fanout.flush()
    assert all(sink.writes == [b"<t1>"] for sink in sinks)
    assert len(fanout) == 0


async def test_flush_delivers_at_once_and_cancels_the_scheduled_one() -> None:
    fanout = Fanout()
    sink = RecordingSink(None)
    fanout.add(sink)
    fanout.publish(frame(1, "t"))
    fanout.flush()
    assert sink.writes == [b"<t1>"]
    await asyncio.sleep(0)
    assert sink.writes == [b"<t1>"]  # not a second time


async def test_each_group_keeps_a_running_total_of_its_bytes() -> None:
    fanout = Fanout()
    a, a_framed = RecordingSink(frozenset({"a"})), RecordingSink(frozenset({"a"}), framed)
    outsider = RecordingSink(frozenset({"b"}))
    for sink in (a, a_framed):
        fanout.add(sink)
    assert fanout.bytes_to_group(a) == 0
    fanout.publish(frame(1, "a"))
    fanout.flush()
    fanout.publish(frame(2, "a"))
    fanout.publish(frame(3, "a"))
    fanout.flush()
    assert fanout.bytes_to_group(a) == sum(map(len, a.writes)) == len(b"<a1><a2><a3>")
    assert fanout.bytes_to_group(a_framed) == sum(map(len, a_framed.writes))
    assert fanout.bytes_to_group(outsider) == 0  # in no group
    fanout.remove(a)
    fanout.remove(a_framed)
    assert fanout._group_bytes == {}  # gone with the groups


async def test_removing_a_sink_does_not_scan_the_other_groups() -> None:
    """Remove is O(topics of that sink): 20k subscribers on distinct topics used to take
    10.6 s of CPU to remove (each removal scanned every group); now a few tens of ms."""
    fanout = Fanout()
    sinks = [RecordingSink(frozenset({f"t{n}"})) for n in range(20_000)]
    topics = frozenset({"s"})
    shared = [RecordingSink(topics, framed), RecordingSink(topics)]  # two groups, one set
    for sink in sinks + shared:
        fanout.add(sink)
    started = time.process_time()
    for sink in sinks:
        fanout.remove(sink)
    assert time.process_time() - started < 3.0  # quadratic took 10.6 s; this ~0.05 s
    assert len(fanout) == 2
    # a topic set stays shared while any group uses it, and is forgotten after the last
    fanout.remove(shared[0])
    assert fanout.shared_topics(frozenset({"s"})) is topics
    fanout.remove(shared[1])
    assert fanout.shared_topics(frozenset({"s"})) is not topics


class SlowSink(RecordingSink):
    """A sink whose writes take time, as copies of 100 KB into full buffers do."""

    def send(self, data: bytes) -> None:
        time.sleep(0.0005)  # the cost being simulated, not a wait for a condition
        super().send(data)


async def test_a_big_pass_is_spread_over_iterations_in_order() -> None:
    """A pass that takes long is written a slice per loop iteration, so others get to run;
    other groups' frames overtake it, and each sink still gets every frame once, in order."""
    fanout = Fanout()
    slow = [SlowSink(frozenset({"a"})) for _ in range(4 * CHECK_EVERY)]
    other = RecordingSink(frozenset({"b"}))
    for sink in [*slow, other]:
        fanout.add(sink)
    fanout.publish(Frame("a", b"<big>"))
    await asyncio.sleep(0)
    written = sum(1 for sink in slow if sink.writes)
    assert 0 < written < len(slow)  # 32 ms per 64 members: past the 5 ms of a slice
    fanout.publish(Frame("a", b"<after>"))  # queued behind the unfinished pass
    fanout.publish(Frame("b", b"<other>"))  # not behind it
    await asyncio.sleep(0)
    assert other.writes == [b"<other>"]
    assert not all(sink.writes for sink in slow)
    for _ in range(len(slow)):
        if all(len(sink.writes) == 2 for sink in slow):
            break
        await asyncio.sleep(0)
    assert all(sink.writes == [b"<big>", b"<after>"] for sink in slow)


async def test_what_waits_behind_an_unfinished_pass_is_one_write_per_member() -> None:
    """Frames published over several iterations while a group's pass is unfinished gather
    in one waiting write: 10k subscribers cost one write each per pass, not one per
    iteration (one per iteration cut deliveries to a seventh). A sink added meanwhile
    starts a new write: it gets only what was published after it came."""
    fanout = Fanout()
    slow = [SlowSink(frozenset({"a"})) for _ in range(8 * CHECK_EVERY)]  # 8 slices of 32 ms
    for sink in slow:
        fanout.add(sink)
    fanout.publish(Frame("a", b"<big>"))
    await asyncio.sleep(0)  # the first slice: unfinished
    for n in range(3):
        fanout.publish(Frame("a", b"<w%d>" % n))
        await asyncio.sleep(0)  # each in its own iteration, the pass still going
    assert not all(sink.writes for sink in slow)
    late = RecordingSink(frozenset({"a"}))
    fanout.add(late)
    fanout.publish(Frame("a", b"<late>"))
    fanout.flush()
    assert all(sink.writes == [b"<big>", b"<w0><w1><w2>", b"<late>"] for sink in slow)
    assert late.writes == [b"<late>"]
    assert fanout.stats.delivered == len(slow) * 5 + 1
    assert fanout.bytes_to_group(late) == len(b"<big><w0><w1><w2><late>")
    assert fanout._gathering == {}
    assert not fanout._writes


async def test_flush_delivers_a_big_pass_at_once() -> None:
    """Before a subscriber's snapshot, everything queued must be out: no slicing."""
    fanout = Fanout()
    sinks = [SlowSink(frozenset({"a"})) for _ in range(2 * CHECK_EVERY)]
    for sink in sinks:
        fanout.add(sink)
    fanout.publish(Frame("a", b"y" * 100_000))
    await asyncio.sleep(0)  # the first slice
    fanout.publish(Frame("a", b"<more>"))
    fanout.flush()
    assert all(sink.writes[-1].endswith(b"<more>") for sink in sinks)
    assert all(b"".join(sink.writes) == b"y" * 100_000 + b"<more>" for sink in sinks)


async def test_settle_fixes_who_gets_what_is_queued_without_writing() -> None:
    """What a subscriber's snapshot needs: frames queued before it are not its own, and
    settling them writes nothing (a big pass under way must not hold up a subscribe)."""
    fanout = Fanout()
    before = RecordingSink(frozenset({"a"}))
    fanout.add(before)
    fanout.publish(Frame("a", b"<queued>"))
    fanout.settle()
    assert before.writes == []
    after = RecordingSink(frozenset({"a"}))
    fanout.add(after)
    fanout.publish(Frame("a", b"<later>"))
    await asyncio.sleep(0)
    assert before.writes == [b"<queued>", b"<later>"]
    assert after.writes == [b"<later>"]
