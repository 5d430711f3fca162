"""``GET /api/logs`` and ``GET /logs/{name}``: live tails of the logs folder over SSE.

The tails themselves are followed by the log hub (``sources/loghub.py``),
which the watcher task drives; both are started with the app (see
``app.py``). A subscriber registers with the hub's fan-out before anything
is answered (see :mod:`streamer.web.streams` for the stream's life), so a
line appended once the client sees the response is never missed.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from .. import sse
from ..errors import Problem, not_found
from ..paths import clean_parts, has_smuggled_separator, resolve_inside
from ..sources.loghub import LINE_KINDS, Feed, LogHub, grep_topic
from ..sources.logtail import (
    SpanReader,
    TailEvent,
    last_lines,
    line_id,
    line_start_at_or_after,
    open_log,
    parse_line_id,
)
from .formats import iso_time, json_line
from .keys import LOG_HUB, SETTINGS
from .streams import (
    SseResponse,
    SseStream,
    client_may_leave,
    last_event_id,
    start_stream,
    write_opening,
)

MAX_TAIL: Final = 10_000
MAX_GREP: Final = 200


# -- listing -------------------------------------------------------------------------------


def list_logs(root: str, hub: LogHub) -> list[dict[str, Any]]:
    subscribers = {feed.path: feed.subscribers for feed in hub.feeds.values()}
    entries = []
    for name in sorted(os.listdir(root)):
        if resolve_inside(root, name) is None:
            continue
        path = os.path.join(root, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
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


async def api_logs(request: web.Request) -> web.Response:
    root = request.app[SETTINGS].logs
    entries = [] if root is None else list_logs(str(root), request.app[LOG_HUB])
    return web.json_response(
        {"logs": entries}, headers={"Cache-Control": "no-cache"}, dumps=json_line
    )


# -- one tail --------------------------------------------------------------------------------


def _query(request: web.Request) -> tuple[int, str | None]:
    """``(tail, grep needle)`` from ``?tail=N&grep=text``; 400 when malformed."""
    tail_text = request.query.get("tail", "0")
    if not (tail_text.isascii() and tail_text.isdigit()) or int(tail_text) > MAX_TAIL:
        raise Problem(
            400, "bad-query", f"tail must be a number from 0 to {MAX_TAIL}.", parameter="tail"
        )
    grep = request.query.get("grep")
    if grep is not None and not 1 <= len(grep) <= MAX_GREP:
        raise Problem(
            400, "bad-query", f"grep must be 1 to {MAX_GREP} characters.", parameter="grep"
        )
    return int(tail_text), grep.casefold() if grep is not None else None


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
        self, response: SseResponse, feed: Feed, max_line: int, needle: str | None
    ) -> None:
        """Write the lines up to :attr:`stop` with flow control. Live events meanwhile wait in
        the stream's backlog (bounded like its buffer). If the file is truncated under the
        catch-up, what is left of it is gone: stop there (the backlog has ``truncated``)."""
        reader = SpanReader(
            self.fd, self.inode, self.position, self.stop, max_line, self.fingerprint
        )
        while True:
            tail = feed.tail
            if tail.inode == self.inode and tail.generation != self.generation:
                return  # truncated since we registered: these offsets hold other bytes now
            events = await asyncio.to_thread(reader.next_chunk)
            if events is None:
                return
            if events:
                await response.write(_encode(events, needle))


def _resumption(feed: Feed, last_id: str) -> Resumption | str:
    """Where a reconnecting subscriber continues, or why it cannot (the reset reason).
    Blocking (it may skip the rest of a cut line): run in a worker thread, under the lock."""
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
    return Resumption(fd, inode, line_start_at_or_after(fd, offset))


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


async def _register(
    request: web.Request, feed: Feed, stream: SseStream, tail: int, needle: str | None
) -> tuple[bytes, Resumption | None]:
    """Register ``stream`` with the feed at a line boundary, under the feed's lock (after
    flushing the fan-out, so nothing published before reaches it and nothing after is
    missed). Returns what to write before anything else (a reset or the last lines) and,
    for a resumed subscriber, the catch-up to write from the file before going live."""
    hub = request.app[LOG_HUB]
    last_id = last_event_id(request)
    async with feed.lock:
        hub.fanout.flush()
        tail_state = feed.tail
        found = await _find_resumption(feed, last_id) if last_id is not None else None
        opening = b""
        if isinstance(found, str):
            assert last_id is not None
            live_id = line_id(tail_state.inode, tail_state.offset)
            opening = sse.encode_reset(live_id, found, last_id)
        elif found is None and tail and tail_state.fd is not None:
            events = await asyncio.to_thread(
                last_lines, tail_state.fd, tail_state.inode, tail_state.offset, tail,
                hub.max_line, needle,
            )  # fmt: skip
            opening = _encode(events, None)
        elif found is not None:
            found.stop = tail_state.offset
            found.generation = tail_state.generation
            found.fingerprint = tail_state.fingerprint()
        hub.fanout.add(stream)
    return opening, found if isinstance(found, Resumption) else None


def _log_path(root: str, name: str, raw_path: str) -> str | None:
    """The path of a log by its name (not resolved: a symlink is followed wherever it points
    later) if it is a regular file inside the folder now; ``None`` means 404."""
    if has_smuggled_separator(raw_path):
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
    if path is None:
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
                opening, resumption = await _register(request, feed, stream, tail, needle)
                await write_opening(request, response, opening, [])  # now it is subscribed
                if resumption is not None:
                    await resumption.catch_up(response, feed, hub.max_line, needle)
                stream.go_live()
                if await stream.closed == "shutdown":  # inline: a helper coroutine would stay alive
                    await response.write_eof()  # for the life of every idle stream
    finally:
        stream.stop_counting()
        hub.fanout.remove(stream)
        if resumption is not None:
            os.close(resumption.fd)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/logs", api_logs)
    app.router.add_get("/logs/{name:.+}", stream_log, allow_head=False)
