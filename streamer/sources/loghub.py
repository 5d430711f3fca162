"""One tailer per followed log file, however many subscribers it has.

A :class:`Feed` exists while a file has subscribers. Its :class:`Tail` is
polled (in a worker thread, one blocking call per wake-up) when the watcher
reports a change in its folder and on every periodic rescan; the events are
encoded once and handed to the hub's own :class:`Fanout` (separate from the
broker's, so ``/events`` subscribers to every topic do not get log lines).

Topics inside that fan-out: the log's path (by name: a symlink is followed
to wherever it points) for plain subscribers, and path + NUL + needle for
each ``grep`` filter in use, so subscribers with
the same filter share bytes and nobody filters per subscriber.

Starting a subscriber without a gap or a duplicate: the feed's lock is held
by a poll while it reads and publishes, and by a new subscriber while it
reads what it must catch up on and registers itself (after flushing what the
fan-out still holds), so a line is either in the catch-up or live, never
both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator

from .. import sse
from ..fanout import Fanout, Frame
from .logtail import MAX_LINE, Tail, TailEvent

log = logging.getLogger("streamer.logs")
LINE_KINDS = frozenset({"message", "cut"})


def grep_topic(path: str, needle: str) -> str:
    return f"{path}\0{needle}"


class Feed:
    """A followed file: its tail, lock, subscriber count and grep filters in use."""

    __slots__ = ("lock", "needles", "path", "polling", "subscribers", "tail", "wanted")

    def __init__(self, path: str, root: str, max_line: int) -> None:
        self.path = path  # the log's path by name: the feed's key and its topic in the fan-out
        self.tail = Tail(path, root, max_line)
        self.lock = asyncio.Lock()
        self.subscribers = 0
        self.needles: Counter[str] = Counter()
        self.polling = False  # a poll is waiting for the lock or running
        self.wanted = False  # a change arrived meanwhile: look once more


class LogHub:
    """The feeds of one logs folder and the fan-out their lines go through."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.fanout = Fanout()
        self.max_line = max_line
        self.feeds: dict[str, Feed] = {}  # by path
        self.polls = 0  # blocking poll calls made (on /metrics)

    @contextlib.asynccontextmanager
    async def follow(self, root: str, path: str, needle: str | None) -> AsyncIterator[Feed]:
        """The feed of ``path`` (a log inside ``root``, by name) for one subscriber, created
        on first use and closed after the last one leaves."""
        feed = self.feeds.get(path)
        created = feed is None
        if feed is None:
            feed = self.feeds[path] = Feed(path, root, self.max_line)
        feed.subscribers += 1  # before any await: a cancelled start still gets cleaned up
        if needle is not None:
            feed.needles[needle] += 1
        try:
            if created:
                async with feed.lock:
                    await asyncio.to_thread(feed.tail.start_at_end)
            yield feed
        finally:
            feed.subscribers -= 1
            if needle is not None:
                feed.needles[needle] -= 1
                if not feed.needles[needle]:
                    del feed.needles[needle]
            if feed.subscribers == 0 and self.feeds.get(path) is feed:
                del self.feeds[path]
                async with feed.lock:
                    feed.tail.close()

    def close(self) -> None:
        """Close every followed file (at shutdown, once nothing polls any more)."""
        for feed in self.feeds.values():
            feed.tail.close()

    async def poll(self, feed: Feed) -> None:
        """Read what changed and publish it. Wake-ups that arrive while a poll is waiting
        or running are folded into it (it looks once more before it ends)."""
        if feed.polling:
            feed.wanted = True
            return
        feed.polling = True
        try:
            async with feed.lock:  # may wait for a subscriber that is registering
                while True:
                    feed.wanted = False
                    if self.feeds.get(feed.path) is not feed:
                        return  # closed meanwhile
                    try:
                        events, more = await asyncio.to_thread(_poll_once, feed.tail)
                    except OSError:  # the file changed kind under us; the next poll retries
                        log.exception("cannot read %s", feed.path)
                        return
                    self.polls += 1
                    self.publish(feed, events)
                    if not (more or feed.wanted):
                        return
        finally:
            feed.polling = False

    async def poll_all(self) -> None:
        for feed in list(self.feeds.values()):
            await self.poll(feed)  # never raises for one file's trouble: see poll()

    def publish(self, feed: Feed, events: list[TailEvent]) -> None:
        fanout = self.fanout
        for event in events:
            data = sse.encode_event(event.id, event.kind, event.data)
            fanout.publish(Frame(feed.path, data))
            if not feed.needles:
                continue
            folded = event.data.casefold() if event.kind in LINE_KINDS else ""
            for needle in feed.needles:
                if event.kind not in LINE_KINDS or needle in folded:
                    fanout.publish(Frame(grep_topic(feed.path, needle), data))


def _poll_once(tail: Tail) -> tuple[list[TailEvent], bool]:
    """One wake-up's work in the worker thread: poll, and whether more is already waiting."""
    events = tail.poll()
    return events, tail.has_more()
