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
from ..sources.loghub import Feed, LogHub, grep_topic
from ..sources.logtail import TailEvent, last_lines, line_id, parse_line_id, read_lines
from ..sources.watcher import Changes, Watcher
from .events import SSE_HEADERS, SseStream, chunked, unframed
from .files import not_found
from .keys import BROKER, LOG_HUB, SETTINGS
from .listing import iso_time

log = logging.getLogger("streamer.logs")

OWN_LOG: Final = "streamer.log"  # the server's own log, written into the logs folder
MAX_TAIL: Final = 10_000
MAX_GREP: Final = 200
CATCH_UP_LOCKED: Final = 1024 * 1024  # catch up without the lock until this close to live
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
    if not tail_text.isdigit() or int(tail_text) > MAX_TAIL:
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
    return b"".join(
        sse.encode_event(event.id, event.kind, event.data)
        for event in events
        if needle is None or needle in event.data.casefold()
    )


def _open_inode(path: str, inode: int) -> int | None:
    """An fd of ``path`` if it is still that inode."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if os.fstat(fd).st_ino != inode:
        os.close(fd)
        return None
    return fd


async def _catch_up(
    response: web.StreamResponse, fd: int, inode: int, start: int, stop: int, needle: str | None
) -> int:
    """Write the lines from ``start`` to ``stop`` with flow control; the offset reached."""
    offset = start
    while offset < stop:
        events, reached = await asyncio.to_thread(read_lines, fd, inode, offset, stop)
        if reached == offset:
            break
        await response.write(_encode(events, needle))
        offset = reached
    return offset


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
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    resume = parse_line_id(last_id) if last_id else None
    fd = None
    reset = None
    position = 0
    if last_id is not None:
        if resume is None:
            reset = "malformed"
        elif resume[0] != feed.tail.inode or resume[1] > feed.tail.offset:
            reset = "gone" if resume[0] != feed.tail.inode else "unknown"
        else:
            fd = _open_inode(feed.path, resume[0])
            reset = "gone" if fd is None else None
    try:
        if fd is not None:  # most of the catch-up without holding up the feed
            assert resume is not None
            await response.write(preamble)
            preamble = b""
            position = await _catch_up(response, fd, resume[0], resume[1], feed.tail.offset, needle)
        async with feed.lock:
            hub.fanout.flush()  # nothing published before this moment reaches the stream
            inode, offset = feed.tail.inode, feed.tail.offset
            if fd is not None:
                pending: list[TailEvent] = []
                while position < offset and fd is not None:
                    events, reached = await asyncio.to_thread(
                        read_lines, fd, inode, position, offset
                    )
                    if reached == position:
                        break
                    pending += events
                    position = reached
                opening = _encode(pending, needle)
            elif reset is not None:
                data = json.dumps({"reason": reset, "lastEventId": (last_id or "")[:200]})
                opening = sse.encode_event(line_id(inode, offset), "reset", data)
            elif tail and feed.tail.fd is not None:
                tail_fd = feed.tail.fd
                events = await asyncio.to_thread(last_lines, tail_fd, inode, offset, tail)
                opening = _encode(events, needle)
            else:
                opening = b""
            hub.fanout.add(stream)
        return preamble + opening
    finally:
        if fd is not None:
            os.close(fd)


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
    name = request.match_info["name"]
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
    topic = name if needle is None else grep_topic(name, needle)
    stream = SseStream(
        hub.fanout.shared_topics(frozenset({topic})),
        chunked if is_chunked else unframed,
        transport,
        hub.fanout,
        settings.max_buffer,
    )
    async with hub.follow(name, path, needle) as feed:
        try:
            preamble = sse.encode_preamble(settings.retry)
            opening = await _open_stream(request, response, feed, stream, tail, needle, preamble)
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/logs", api_logs)
    app.router.add_get("/logs/{name:.+}", stream_log, allow_head=False)
