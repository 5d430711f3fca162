"""``GET /api/logs`` and ``GET /logs/{name}``: live tails of the logs folder over SSE.

The watcher task (``sources/watcher.py``), the log hub (``sources/loghub.py``)
and the server's own log file are started here with the app
(:func:`logs_ctx`) and stopped with it. The watcher also turns changes in the
media folder into ``created`` / ``modified`` / ``deleted`` events on the
``files`` topic of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from aiohttp.http import HttpVersion11
from watchfiles import Change

from .. import sse
from ..errors import Problem
from ..logconfig import BatchingHandler, FastFormatter
from ..paths import clean_parts, resolve_inside
from ..sources.loghub import LINE_KINDS, Feed, LogHub, grep_topic
from ..sources.logtail import (
    TailEvent,
    decode,
    last_lines,
    line_id,
    line_start_at_or_after,
    open_log,
    parse_line_id,
    read_lines,
)
from ..sources.watcher import Changes, Watcher
from .events import SSE_HEADERS, SseStream, chunked, unframed
from .files import not_found
from .keys import BROKER, LOG_HUB, SETTINGS
from .listing import iso_time

log = logging.getLogger("streamer.logs")

OWN_LOG: Final = "streamer.log"  # the server's own log, written into the logs folder
MAX_TAIL: Final = 10_000
MAX_GREP: Final = 200
MEDIA_CHANGES: Final = {
    Change.added: "created",
    Change.modified: "modified",
    Change.deleted: "deleted",
}


# -- listing -------------------------------------------------------------------------------


def list_logs(root: str, hub: LogHub) -> list[dict[str, Any]]:
    subscribers = {feed.path: feed.subscribers for feed in hub.feeds.values()}
    entries = []
    for name in sorted(os.listdir(root)):
        path = resolve_inside(root, name)
        if path is None:
            continue
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
    return web.json_response({"logs": entries}, headers={"Cache-Control": "no-cache"})


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


async def _read_span(
    fd: int, inode: int, start: int, stop: int, max_line: int
) -> AsyncIterator[tuple[list[TailEvent], int]]:
    """The lines from ``start`` to ``stop`` in chunks, with the offset each chunk reaches."""
    offset = start
    while offset < stop:
        events, reached = await asyncio.to_thread(read_lines, fd, inode, offset, stop, max_line)
        if reached == offset:
            return
        yield events, reached
        offset = reached


class Resumption:
    """A subscriber continuing from ``<inode>-<offset>``: its own fd on that inode."""

    def __init__(self, fd: int, inode: int, position: int, generation: int) -> None:
        self.fd = fd
        self.inode = inode
        self.position = position
        self.generation = generation  # the tail's, when the catch-up started

    async def catch_up(
        self, response: web.StreamResponse, stop: int, max_line: int, needle: str | None
    ) -> None:
        """Most of the catch-up, written with flow control without holding up the feed."""
        async for events, reached in _read_span(self.fd, self.inode, self.position, stop, max_line):
            await response.write(_encode(events, needle))
            self.position = reached

    async def finish(self, feed: Feed, max_line: int) -> list[TailEvent]:
        """Under the feed's lock: the rest up to where the tail is now. When the file was
        rotated, truncated or deleted meanwhile, what the tail published about it is
        recreated: the rest of the old file, the event, the new file so far."""
        tail = feed.tail
        fd, inode = self.fd, self.inode
        events: list[TailEvent] = []
        same_file = tail.generation == self.generation and tail.inode == inode
        if same_file and tail.fd is not None:
            async for chunk, _ in _read_span(fd, inode, self.position, tail.offset, max_line):
                events += chunk
            return events
        if tail.inode != inode or tail.fd is None:  # the old file to its end, as the tail did
            size = os.fstat(fd).st_size
            async for chunk, reached in _read_span(fd, inode, self.position, size, max_line):
                events += chunk
                self.position = reached
            if self.position < size:  # its unfinished last line
                rest = os.pread(fd, min(size - self.position, max_line), self.position)
                events.append(TailEvent("message", line_id(inode, size), decode(rest)))
        if tail.fd is None:
            events.append(TailEvent("deleted", None, "deleted"))
            return events
        kind = "rotated" if tail.inode != inode else "truncated"
        events.append(TailEvent(kind, line_id(tail.inode, 0), kind))
        async for chunk, _ in _read_span(tail.fd, tail.inode, 0, tail.offset, max_line):
            events += chunk
        return events


def _resumption(feed: Feed, last_id: str) -> Resumption | str:
    """Where a reconnecting subscriber continues, or why it cannot (the reset reason).
    Blocking: run in a worker thread."""
    resume = parse_line_id(last_id)
    if resume is None:
        return "malformed"
    inode, offset = resume
    if inode != feed.tail.inode:
        return "gone"
    if offset > feed.tail.offset:
        return "unknown"
    fd = open_log(feed.tail.root, feed.path)
    if fd is None or os.fstat(fd).st_ino != inode:
        if fd is not None:
            os.close(fd)
        return "gone"
    start = line_start_at_or_after(fd, offset)
    return Resumption(fd, inode, start, feed.tail.generation)


def _discard_resumption(finding: asyncio.Future[Resumption | str]) -> None:
    if not finding.cancelled() and finding.exception() is None:
        found = finding.result()
        if isinstance(found, Resumption):
            os.close(found.fd)


async def _open_stream(
    request: web.Request,
    response: web.StreamResponse,
    feed: Feed,
    stream: SseStream,
    tail: int,
    needle: str | None,
    preamble: bytes,
) -> bytes:
    """Register ``stream`` with the feed at a line boundary; return what must be written
    before its live events (the end of a catch-up, the last lines, or a reset).

    The preamble (``: connected``) goes out only once the stream is registered (or
    before a long catch-up), so a client that sees it and appends a line gets that line.
    """
    hub = request.app[LOG_HUB]
    max_line = hub.max_line
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    resumption = None
    if last_id is not None:
        finding = asyncio.ensure_future(asyncio.to_thread(_resumption, feed, last_id))
        try:
            resumption = await asyncio.shield(finding)
        except asyncio.CancelledError:  # the client left: close the fd the thread opens
            finding.add_done_callback(_discard_resumption)
            raise
    try:
        if isinstance(resumption, Resumption):
            await response.write(preamble)
            preamble = b""
            await resumption.catch_up(response, feed.tail.offset, max_line, needle)
        async with feed.lock:
            hub.fanout.flush()  # nothing published before this moment reaches the stream
            tail_state = feed.tail
            if isinstance(resumption, Resumption):
                opening = _encode(await resumption.finish(feed, max_line), needle)
            elif isinstance(resumption, str):
                data = json.dumps({"reason": resumption, "lastEventId": (last_id or "")[:200]})
                live_id = line_id(tail_state.inode, tail_state.offset)
                opening = sse.encode_event(live_id, "reset", data)
            elif tail and tail_state.fd is not None:
                events = await asyncio.to_thread(
                    last_lines, tail_state.fd, tail_state.inode, tail_state.offset, tail,
                    max_line, needle,
                )  # fmt: skip
                opening = _encode(events, None)
            else:
                opening = b""
            hub.fanout.add(stream)
        return preamble + opening
    finally:
        if isinstance(resumption, Resumption):
            os.close(resumption.fd)


def _log_path(root: str, name: str, raw_path: str) -> str | None:
    """The real path of a log file, resolved like a media path; ``None`` means 404."""
    if "%2f" in raw_path.lower() or "%5c" in raw_path.lower():
        return None
    path = resolve_inside(root, name)
    return path if path is not None and os.path.isfile(path) else None


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

    response = web.StreamResponse(headers=SSE_HEADERS)
    is_chunked = request.version >= HttpVersion11
    if is_chunked:
        response.enable_chunked_encoding()
    await response.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        return response
    topic = path if needle is None else grep_topic(path, needle)
    stream = SseStream(
        hub.fanout.shared_topics(frozenset({topic})),
        chunked if is_chunked else unframed,
        transport,
        hub.fanout,
        settings.max_buffer,
    )
    hub.catching_up.add(transport)  # until it is in the fan-out: see end_catch_ups
    try:
        async with hub.follow(str(settings.logs), path, needle) as feed:
            preamble = sse.encode_preamble(settings.retry)
            opening = await _open_stream(request, response, feed, stream, tail, needle, preamble)
            hub.catching_up.discard(transport)
            if opening:
                await response.write(opening)
            stream.go_live()
            if await stream.closed == "shutdown":
                await response.write_eof()
    except ConnectionError:
        pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not transport.is_closing() or task is None:
            raise
        task.uncancel()  # the client left: a normal end, logged like any request
    finally:
        hub.catching_up.discard(transport)
        hub.fanout.remove(stream)
    return response


# -- lifecycle: the watcher, the hub, the server's own log ----------------------------------


def _media_event(root: str, change: Change, path: str) -> tuple[str, str] | None:
    """``(event name, JSON data)`` for a change in the media folder, or ``None`` if hidden."""
    rel = os.path.relpath(path, root)
    if rel.startswith("..") or clean_parts(rel.replace(os.sep, "/")) is None:
        return None
    size = None
    kind = "file"
    with contextlib.suppress(OSError):
        st = os.stat(path)
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    data = {"path": rel.replace(os.sep, "/"), "size": size, "type": kind}
    return MEDIA_CHANGES[change], json.dumps(data, separators=(",", ":"))


class Sources:
    """What the watcher's changes are turned into, and the poll tasks it starts."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.media = str(app[SETTINGS].media)
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_changes(self, changes: Changes) -> None:
        hub = self.app[LOG_HUB]
        changed = {path for _, path in changes}
        for feed in list(hub.feeds.values()):
            if feed.path in changed:
                self._spawn(hub.poll(feed))
        broker = self.app[BROKER]
        prefix = self.media + os.sep
        for change, path in sorted(changes, key=lambda item: item[1]):
            if path.startswith(prefix):
                event = _media_event(self.media, change, path)
                if event is not None:
                    await broker.publish("files", event[1], event=event[0])

    async def on_rescan(self) -> None:
        self._spawn(self.app[LOG_HUB].poll_all())

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _own_log(folder: Path) -> BatchingHandler:
    handler = BatchingHandler(open(folder / OWN_LOG, "a", encoding="utf-8"))  # noqa: SIM115
    handler.setFormatter(FastFormatter())
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


async def logs_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the log hub, the server's own log file and the watcher task."""
    settings = app[SETTINGS]
    app[LOG_HUB] = LogHub(settings.max_line)
    own_log = _own_log(settings.logs) if settings.logs is not None else None
    sources = Sources(app)
    folders = [str(settings.media)] + ([str(settings.logs)] if settings.logs else [])
    watcher = Watcher(folders, sources.on_changes, sources.on_rescan)
    task = asyncio.create_task(watcher.run(), name="streamer-watcher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await sources.close()
    for feed in list(app[LOG_HUB].feeds.values()):
        feed.tail.close()
    if own_log is not None:
        logging.getLogger().removeHandler(own_log)
        own_log.close()
        own_log.stream.close()


async def end_catch_ups(app: web.Application) -> None:
    """``on_shutdown``: subscribers still catching up are not in the fan-out, so the
    streams' graceful end does not reach them; close them (they resume by id)."""
    for transport in list(app[LOG_HUB].catching_up):
        transport.abort()  # close() would wait for a buffer the client is not reading


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/logs", api_logs)
    app.router.add_get("/logs/{name:.+}", stream_log, allow_head=False)
