"""One tailer per followed log file, however many subscribers it has.

A :class:`Feed` exists while a file has subscribers. Its :class:`Tail` is
polled (in a worker thread, one blocking call per wake-up) when the watcher
reports a change in its folder and on every periodic rescan; the events are
encoded once and handed to the hub's own :class:`Fanout` (separate from the
broker's, so ``/events`` subscribers to every topic do not get log lines).

Topics inside that fan-out: the log's path (by name: a symlink is followed
to wherever it points) for plain subscribers, and path + NUL + needle for
each ``grep`` filter in use, so subscribers with
the same filter share bytes and nobody filters per subscriber. A feed's
filters are matched in one pass per line (:class:`NeedleSet`), and a feed
takes at most :data:`MAX_NEEDLES` distinct ones.

Starting a subscriber without a gap or a duplicate: the feed's lock is held
by a poll while it reads and publishes, and by a new subscriber while it
registers itself (after flushing what the fan-out still holds) and notes
where the tail is: a line is either before that point (its catch-up, or its
``?tail=``, read later without the lock) or live, never both. A registration
holds the lock for a few system calls, never for a read of the file, so
however many subscribers start at once, live lines are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Final, TypeAlias

from .. import sse
from ..fanout import Fanout, Frame
from .logtail import MAX_LINE, Tail, TailEvent

log = logging.getLogger("streamer.logs")
LINE_KINDS = frozenset({"message", "cut"})

# Distinct grep filters one feed takes; a new one past this gets 503 (one already in use is
# shared, so it is always accepted). What matching costs the loop, measured on 20,000 lines
# of 140 characters that each match a filter (python /tmp-style loop over found_in):
#   filters            32    96   128   256   2,000
#   substring each   49 ms  137   197   392   2,899 (the cost issue 10 found: 1.8 s there)
#   NeedleSet index    -    153   168   163     336
MAX_NEEDLES: Final = 256
# Up to this many filters, a substring search each is faster than the index (see above).
FEW_NEEDLES: Final = 96
# Filters added to an indexed set are searched one by one until there are more than this
# many, then the index is rebuilt (~5 ms for 256 short filters, ~75 ms for 256 of 200
# characters): a rebuild per this many new filters, not one per subscriber.
ADDED_BEFORE_REINDEX: Final = 32
# Blocking reads for subscribers that start (``?tail=``, resume catch-ups) that may run at
# once, a block each: the worker threads the polls need are never all taken by them.
STARTING_READERS: Final = 4


def grep_topic(path: str, needle: str) -> str:
    return f"{path}\0{needle}"


class TooManyFilters(Exception):
    """A feed already has :data:`MAX_NEEDLES` distinct grep filters."""


class NeedleSet:
    """The grep filters of one feed (casefolded), with how many subscribers use each,
    matched against a line in one pass.

    Many filters are *indexed*: one regex of them as a trie finds, at each position of the
    line, the longest filter that starts there (in a lookahead, so matches may overlap);
    the other filters that start there are its prefixes, known in advance. Building that
    regex costs up to ~75 ms (256 filters of 200 characters), so it is not rebuilt on
    every change: filters added since are *plain* (a substring search each) until there
    are more than :data:`ADDED_BEFORE_REINDEX` of them, and filters removed stay in the
    index (and are ignored) until they are half of it. Up to :data:`FEW_NEEDLES` filters,
    all are plain.
    """

    __slots__ = ("_indexed", "_pattern", "_plain", "_prefixes", "_users")

    def __init__(self) -> None:
        self._users: Counter[str] = Counter()
        self._plain: set[str] = set()
        self._indexed: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._prefixes: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def add(self, needle: str) -> None:
        """One more subscriber of ``needle``; :class:`TooManyFilters` if it is new and the
        set is full (nothing changed then)."""
        if needle not in self._users:
            if len(self._users) >= MAX_NEEDLES:
                raise TooManyFilters(needle)
            if needle not in self._indexed:
                self._plain.add(needle)
                if len(self._plain) > (ADDED_BEFORE_REINDEX if self._pattern else FEW_NEEDLES):
                    self._reindex(self._users.keys() | {needle})
        self._users[needle] += 1

    def remove(self, needle: str) -> None:
        self._users[needle] -= 1
        if self._users[needle]:
            return
        del self._users[needle]
        self._plain.discard(needle)
        if len(self._indexed) > 2 * len(self._users.keys() & self._indexed):
            self._reindex(self._users.keys())

    def found_in(self, folded: str) -> set[str]:
        """The filters in use that occur in ``folded`` (a casefolded line)."""
        found = {needle for needle in self._plain if needle in folded}
        if self._pattern is not None:
            for match in self._pattern.finditer(folded):
                found.update(p for p in self._prefixes[match[1]] if p in self._users)
        return found

    def _reindex(self, needles: Iterable[str]) -> None:
        needles = frozenset(needles)
        if len(needles) <= FEW_NEEDLES:
            self._plain, self._indexed, self._pattern = set(needles), frozenset(), None
            self._prefixes = {}
            return
        trie = _trie(needles)
        self._plain, self._indexed = set(), needles
        self._pattern = re.compile(f"(?=({_trie_pattern(trie)}))")
        self._prefixes = {needle: _prefixes_in(trie, needle) for needle in needles}


_Trie: TypeAlias = dict[str, "_Trie"]  # a char to the rest; "" marks where a filter ends


def _trie(needles: Iterable[str]) -> _Trie:
    trie: _Trie = {}
    for needle in needles:
        node = trie
        for char in needle:
            node = node.setdefault(char, {})
        node[""] = {}  # a filter ends here
    return trie


def _prefixes_in(trie: _Trie, needle: str) -> list[str]:
    """The filters that are prefixes of ``needle`` (itself included)."""
    found = []
    node = trie
    for length, char in enumerate(needle, 1):
        node = node[char]
        if "" in node:
            found.append(needle[:length])
    return found


def _trie_pattern(node: _Trie) -> str:
    """A regex that matches the longest filter of the trie at a position: ``err(?:or)?``
    for ``err`` and ``error`` (a plain alternation would try every filter there)."""
    branches = [re.escape(char) + _trie_pattern(child) for char, child in node.items() if char]
    ends_here = "" in node
    if not branches:
        return ""
    if len(branches) == 1 and not ends_here:
        return branches[0]
    return "(?:" + "|".join(branches) + (")?" if ends_here else ")")


class Feed:
    """A followed file: its tail, lock, subscriber count and grep filters in use."""

    __slots__ = (
        "lock",
        "needles",
        "path",
        "polling",
        "subscribers",
        "tail",
        "wanted",
    )

    def __init__(self, path: str, root: str, max_line: int) -> None:
        self.path = path  # the log's path by name: the feed's key and its topic in the fan-out
        self.tail = Tail(path, root, max_line)
        self.lock = asyncio.Lock()
        self.subscribers = 0
        self.needles = NeedleSet()
        self.polling = False  # a poll is waiting for the lock or running
        self.wanted = False  # a change arrived meanwhile: look once more


class LogHub:
    """The feeds of one logs folder and the fan-out their lines go through."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.fanout = Fanout()
        self.max_line = max_line
        self.feeds: dict[str, Feed] = {}  # by path
        self.polls = 0  # blocking poll calls made (on /metrics)
        self.starting = asyncio.Semaphore(STARTING_READERS)  # see STARTING_READERS

    @contextlib.asynccontextmanager
    async def follow(self, root: str, path: str, needle: str | None) -> AsyncIterator[Feed]:
        """The feed of ``path`` (a log inside ``root``, by name) for one subscriber, created
        on first use and closed after the last one leaves. Raises :class:`TooManyFilters`
        (before anything changed) when ``needle`` would be one distinct filter too many."""
        feed = self.feeds.get(path)
        created = feed is None
        if feed is None:
            feed = Feed(path, root, self.max_line)
        if needle is not None:
            feed.needles.add(needle)
        if created:
            self.feeds[path] = feed
        feed.subscribers += 1  # before any await: a cancelled start still gets cleaned up
        try:
            if created:
                async with feed.lock:
                    await asyncio.to_thread(feed.tail.start_at_end)
            yield feed
        finally:
            feed.subscribers -= 1
            if needle is not None:
                feed.needles.remove(needle)
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
                    if self.feeds.get(feed.path) is not feed:
                        # closed while it read: a new feed of this file may have started
                        # after these lines, and their topic is its too (twice, else)
                        return
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
            needles: Iterable[str]
            if event.kind in LINE_KINDS:
                needles = feed.needles.found_in(event.data.casefold())
            else:  # rotated, truncated...: every filtered stream needs them too
                needles = feed.needles
            for needle in needles:
                fanout.publish(Frame(grep_topic(feed.path, needle), data))


def _poll_once(tail: Tail) -> tuple[list[TailEvent], bool]:
    """One wake-up's work in the worker thread: poll, and whether more is already waiting."""
    events = tail.poll()
    return events, tail.has_more()
