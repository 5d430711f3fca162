"""``GET /api/logs`` and ``GET /logs/{name}``: live tails of the logs folder over SSE.

The tails themselves are followed by the log hub (``sources/loghub.py``),
which the watcher task drives; both are started with the app (see
``app.py``). A subscriber registers with the hub's fan-out before anything
is answered (see :mod:`streamer.web.streams` for the stream's life), so a
line appended once the client sees the response is never missed.

The server's own log (``--log-file``, when it is in the logs folder) shows
every client's address and URL: it is listed and served to loopback clients
only, unless ``--own-log-access anyone``; anyone else gets the one 404.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from .. import sse
from ..errors import Problem, not_found
from ..paths import clean_parts, has_smuggled_separator, resolve_inside
from ..settings import Settings
from ..sources.loghub import (
    LINE_KINDS,
    MAX_NEEDLES,
    Feed,
    LogHub,
    TooManyFilters,
    grep_topic,
)
from ..sources.logtail import (
    BackwardLines,
    SpanReader,
    TailEvent,
    line_id,
    line_start_at_or_after,
    open_log,
    parse_line_id,
)
from .clients import is_loopback
from .formats import iso_time, json_line
from .keys import LOG_HUB, SETTINGS
from .streams import (
    SseResponse,
    SseStream,
    client_may_leave,
    end_at_shutdown,
    last_event_id,
    start_stream,
    write_opening,
    write_within,
)

log = logging.getLogger("streamer.logs")

MAX_TAIL: Final = 10_000
MAX_GREP: Final = 200
FILTERS_RETRY_AFTER: Final = 5  # seconds: filters in use free up as their streams end


# -- listing -------------------------------------------------------------------------------


FileId = tuple[int, int]  # (st_dev, st_ino): which file, whatever name leads to it


def list_logs(root: str, hub: LogHub, hidden: FileId | None = None) -> list[dict[str, Any]]:
    """The tailable logs of ``root``, without the file ``hidden`` (the own log, for a client
    that may not see it) and without names that are not UTF-8 (see :func:`_representable`)."""
    subscribers = {feed.path: feed.subscribers for feed in hub.feeds.values()}
    entries = []
    names = os.listdir(root)
    shown = sorted(name for name in names if _representable(name))
    if len(shown) < len(names):
        log.debug("%s: %d names that are not UTF-8 not listed", root, len(names) - len(shown))
    for name in shown:
        if resolve_inside(root, name) is None:
            continue
        path = os.path.join(root, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) == hidden:
            continue
        entries.append(
            {
                "name": name,
                "size": st.st_size,
                "mtime": iso_time(st.st_mtime),
                "link": "/logs/" + quote(name),
                "subscribers": subscribers.get(path, 0),
            }
        )
    return entries


def _representable(name: str) -> bool:
    """Can a client name this file? A name that is not UTF-8 (``os.listdir`` hands it over
    with lone surrogates) can be neither JSON nor a URL that leads back to it: such logs
    are not listed, and no URL reaches them (the same choice as ``/api/files``)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _hidden_own_log(request: web.Request) -> FileId | None:
    """The own log's file when this client may not see it, else ``None``. By the file, not
    its name: a symlink or hard link to it in the logs folder is the same file."""
    settings: Settings = request.app[SETTINGS]
    if settings.log_file is None or settings.own_log_access == "anyone":
        return None
    if is_loopback(request.remote):  # the peer's address, never a forwarded header
        return None
    try:
        st = os.stat(settings.log_file)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_file(path: str, file: FileId | None) -> bool:
    if file is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == file


async def api_logs(request: web.Request) -> web.Response:
    root = request.app[SETTINGS].logs
    hub = request.app[LOG_HUB]
    entries = [] if root is None else list_logs(str(root), hub, _hidden_own_log(request))
    return web.json_response(
        {"logs": entries}, headers={"Cache-Control": "no-cache"}, dumps=json_line
    )


# -- one tail --------------------------------------------------------------------------------


def _query(request: web.Request) -> tuple[int, str | None]:
    """``(tail, grep needle)`` from ``?tail=N&grep=text``; 400 when malformed or repeated."""
    tail_text = _single(request, "tail")
    if tail_text is None:
        tail_text = "0"
    # the length first: int() of 4,301 digits raises (Python's digit limit), of a million
    # it takes seconds; leading zeros are fine, up to the length of the largest value
    if not (
        tail_text.isascii()
        and tail_text.isdigit()
        and len(tail_text) <= len(str(MAX_TAIL))
        and int(tail_text) <= MAX_TAIL
    ):
        raise Problem(
            400, "bad-query", f"tail must be a number from 0 to {MAX_TAIL}.", parameter="tail"
        )
    grep = _single(request, "grep")
    if grep is not None and not 1 <= len(grep) <= MAX_GREP:
        raise Problem(
            400, "bad-query", f"grep must be 1 to {MAX_GREP} characters.", parameter="grep"
        )
    return int(tail_text), grep.casefold() if grep is not None else None


def _single(request: web.Request, name: str) -> str | None:
    """The one value of query parameter ``name``: a stream takes one filter and one tail
    (several would each be one more filter for the hub to match on every line)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Problem(400, "bad-query", f"give {name} at most once.", parameter=name)
    return values[0] if values else None


def _encode(events: list[TailEvent], needle: str | None) -> bytes:
    """SSE bytes of ``events``; with a grep ``needle``, lines without it are left out
    (rotation, truncation and deletion always pass, as they do live)."""
    return b"".join(
        sse.encode_event(event.id, event.kind, event.data)
        for event in events
        if needle is None or event.kind not in LINE_KINDS or needle in event.data.casefold()
    )


class Resumption:
    """A subscriber continuing from ``<inode>-<offset>``: its own fd on that inode, and where
    its catch-up ends (the tail's offset when it was registered)."""

    def __init__(self, fd: int, inode: int, position: int) -> None:
        self.fd = fd
        self.inode = inode
        self.position = position
        self.stop = position
        self.generation = 0
        self.fingerprint: tuple[int, bytes] = (0, b"")

    async def catch_up(
        self,
        response: SseResponse,
        hub: LogHub,
        feed: Feed,
        needle: str | None,
        send_timeout: float,
    ) -> None:
        """Write the lines up to :attr:`stop` with flow control (a client that reads nothing
        for ``send_timeout`` seconds is cut). Live events meanwhile wait in
        the stream's backlog (bounded like its buffer). If the file is truncated under the
        catch-up, what is left of it is gone: stop there (the backlog has ``truncated``)."""
        async with hub.starting:  # may skip the rest of a cut line: a read
            start = await asyncio.to_thread(line_start_at_or_after, self.fd, self.position)
        reader = SpanReader(
            self.fd, self.inode, min(start, self.stop), self.stop, hub.max_line, self.fingerprint
        )
        while True:
            tail = feed.tail
            if tail.inode == self.inode and tail.generation != self.generation:
                return  # truncated since we registered: these offsets hold other bytes now
            async with hub.starting:
                events = await asyncio.to_thread(reader.next_chunk)
            if events is None:
                return
            if events:
                await write_within(response, _encode(events, needle), send_timeout)


def _resumption(feed: Feed, last_id: str) -> Resumption | str:
    """Where a reconnecting subscriber continues, or why it cannot (the reset reason).
    Blocking (an open and a stat): run in a worker thread, under the lock."""
    resume = parse_line_id(last_id)
    if resume is None:
        return "malformed"
    inode, offset = resume
    if inode != feed.tail.inode:
        return "gone"
    if offset > feed.tail.offset:
        return "unknown"
    opened = open_log(feed.tail.root, feed.path)
    if opened is None:
        return "gone"
    fd = opened[0]
    if os.fstat(fd).st_ino != inode:
        os.close(fd)
        return "gone"
    return Resumption(fd, inode, offset)  # moved to a line start later, off the lock


def _discard_resumption(finding: asyncio.Future[Resumption | str]) -> None:
    if not finding.cancelled() and finding.exception() is None:
        found = finding.result()
        if isinstance(found, Resumption):
            os.close(found.fd)


async def _find_resumption(feed: Feed, last_id: str) -> Resumption | str:
    finding = asyncio.ensure_future(asyncio.to_thread(_resumption, feed, last_id))
    try:
        return await asyncio.shield(finding)
    except asyncio.CancelledError:  # the client left: close the fd the thread opens
        finding.add_done_callback(_discard_resumption)
        raise


class TailStart:
    """Where the tail was when a ``?tail=N`` subscriber registered: its lines before that
    point are read later, off the feed's lock (the live lines after it wait in the stream's
    backlog), from a duplicate of the tail's fd, so a rotation meanwhile cannot close it."""

    __slots__ = ("fd", "fingerprint", "generation", "inode", "offset")

    def __init__(self, feed: Feed) -> None:
        tail = feed.tail
        assert tail.fd is not None
        self.fd = os.dup(tail.fd)
        self.inode = tail.inode
        self.offset = tail.offset
        self.generation = tail.generation
        self.fingerprint = tail.fingerprint()

    def unchanged(self, feed: Feed) -> bool:
        """Do the bytes before :attr:`offset` still hold what the tail read? (Truncated and
        rewritten since: the lines read are other bytes; the backlog has ``truncated``.)"""
        tail = feed.tail
        if tail.inode == self.inode and tail.generation != self.generation:
            return False
        at, expected = self.fingerprint
        return not expected or os.pread(self.fd, len(expected), at) == expected


class LastLines:
    """The frames of ``?tail=N``, collected newest first a block per :meth:`step` (blocking:
    run each step in a worker thread). At most ``budget`` bytes: a subscriber may not have
    more unsent (``--max-buffer``), so an opening larger than that could never be sent.
    The newest lines that fit are kept; the first line back that does not fit ends it (a
    line is never skipped to fit older ones, which would leave a gap)."""

    __slots__ = ("budget", "count", "done", "frames", "needle", "reader", "size")

    def __init__(self, reader: BackwardLines, count: int, needle: str | None, budget: int) -> None:
        self.reader = reader
        self.count = count
        self.needle = needle
        self.budget = budget
        self.frames: list[bytes] = []
        self.size = 0
        self.done = False

    def step(self) -> None:
        events = self.reader.next_block()
        if events is None:
            self.done = True
            return
        needle = self.needle
        for event in events:
            if needle is not None and needle not in event.data.casefold():
                continue
            frame = sse.encode_event(event.id, event.kind, event.data)
            if self.size + len(frame) > self.budget:
                self.done = True
                return
            self.frames.append(frame)
            self.size += len(frame)
            if len(self.frames) == self.count:
                self.done = True
                return


async def _read_last_lines(
    hub: LogHub, feed: Feed, start: TailStart, count: int, needle: str | None, budget: int
) -> list[bytes]:
    """The frames of the last ``count`` lines before ``start``, oldest first, read a block
    at a time (at most :data:`~streamer.sources.loghub.STARTING_READERS` such blocks at once
    in the hub) while the feed's lock is free, so live lines are never held up by it."""
    reader = BackwardLines(start.fd, start.inode, start.offset, hub.max_line)
    last = LastLines(reader, count, needle, budget)
    while not last.done:
        async with hub.starting:
            await asyncio.to_thread(last.step)
    if not start.unchanged(feed):
        return []
    last.frames.reverse()
    return last.frames


async def _register(
    request: web.Request, feed: Feed, stream: SseStream, tail: int
) -> tuple[bytes, Resumption | TailStart | None]:
    """Register ``stream`` with the feed at a line boundary, under the feed's lock (after
    settling the fan-out, so nothing published before reaches it and nothing after is
    missed). The lock is held for a few system calls: the lines a subscriber must be sent
    first are read after it, from where the tail was. Returns the reset to write first, if
    any, and for a resumed subscriber its catch-up, for ``?tail=`` where the tail was."""
    hub = request.app[LOG_HUB]
    last_id = last_event_id(request)
    async with feed.lock:
        hub.fanout.settle()
        tail_state = feed.tail
        found = await _find_resumption(feed, last_id) if last_id is not None else None
        opening = b""
        start: Resumption | TailStart | None = None
        if isinstance(found, str):
            assert last_id is not None
            live_id = line_id(tail_state.inode, tail_state.offset)
            opening = sse.encode_reset(live_id, found, last_id)
        elif found is None and tail and tail_state.fd is not None:
            start = TailStart(feed)
        elif found is not None:
            found.stop = tail_state.offset
            found.generation = tail_state.generation
            found.fingerprint = tail_state.fingerprint()
            start = found
        hub.fanout.add(stream)
    return opening, start


async def _open(
    request: web.Request,
    response: SseResponse,
    feed: Feed,
    stream: SseStream,
    tail: int,
    needle: str | None,
) -> Resumption | None:
    """Register, then answer: the headers and the preamble, with the reset or the last
    lines. Returns the catch-up of a resumed subscriber (its fd is the caller's to close).
    What was sent is not kept: this frame ends before the stream's long idle life."""
    hub = request.app[LOG_HUB]
    opening, start = await _register(request, feed, stream, tail)
    try:
        frames: list[bytes] = []
        if isinstance(start, TailStart):
            budget = request.app[SETTINGS].max_buffer
            frames = await _read_last_lines(hub, feed, start, tail, needle, budget)
        await write_opening(request, response, opening, frames)  # now it is subscribed
    except BaseException:
        if isinstance(start, Resumption):
            os.close(start.fd)
        raise
    finally:
        if isinstance(start, TailStart):
            os.close(start.fd)
    return start if isinstance(start, Resumption) else None


def _log_path(root: str, name: str, raw_path: str) -> str | None:
    """The path of a log by its name (not resolved: a symlink is followed wherever it points
    later) if it is a regular file inside the folder now; ``None`` means 404."""
    if has_smuggled_separator(raw_path) or not _representable(name):
        return None
    real = resolve_inside(root, name)
    parts = clean_parts(name)
    if real is None or parts is None or not os.path.isfile(real):
        return None
    return os.path.join(root, *parts)


async def stream_log(request: web.Request) -> web.StreamResponse:
    """``GET /logs/{name}``: SSE tail of one log file."""
    settings = request.app[SETTINGS]
    if settings.logs is None:
        raise not_found()
    path = _log_path(str(settings.logs), request.match_info["name"], request.raw_path)
    if path is None or _is_file(path, _hidden_own_log(request)):
        raise not_found()
    tail, needle = _query(request)
    hub = request.app[LOG_HUB]
    topic = path if needle is None else grep_topic(path, needle)
    topics = hub.fanout.shared_topics(frozenset({topic}))
    response, stream = start_stream(request, hub.fanout, topics)
    if stream is None:
        return response
    resumption: Resumption | None = None
    try:
        with client_may_leave(stream.transport):
            async with hub.follow(str(settings.logs), path, needle) as feed:
                resumption = await _open(request, response, feed, stream, tail, needle)
                if resumption is not None:
                    await resumption.catch_up(
                        response, hub, feed, needle, request.app[SETTINGS].send_timeout
                    )
                stream.go_live()
                if await stream.closed == "shutdown":  # inline: a helper coroutine would stay alive
                    await end_at_shutdown(request, response)  # for the life of every idle stream
    except TooManyFilters:  # from entering follow(): nothing was answered yet
        raise _too_many_filters() from None
    finally:
        stream.stop_counting()
        hub.fanout.remove(stream)
        if resumption is not None:
            os.close(resumption.fd)
    return response


def _too_many_filters() -> Problem:
    """503, not 429: the filters of a feed are shared by every client of the server, so this
    one did nothing wrong by itself and may try again once others are gone (a 429 would
    say that it asked too often)."""
    return Problem(
        503,
        "too-many-filters",
        f"This log already has the most grep filters it takes ({MAX_NEEDLES}); "
        "use one already in use, or try again later.",
        headers={"Retry-After": str(FILTERS_RETRY_AFTER)},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/logs", api_logs)
    app.router.add_get("/logs/{name:.+}", stream_log, allow_head=False)
