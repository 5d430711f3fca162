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
from watchfiles import Change

from .. import sse
from ..errors import Problem
from ..logconfig import BatchingHandler, FastFormatter
from ..paths import clean_parts, resolve_inside
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
from ..sources.watcher import Changes, Watcher
from .events import SseStream, client_may_leave, open_sse_response
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
        self, response: web.StreamResponse, feed: Feed, max_line: int, needle: str | None
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
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    async with feed.lock:
        hub.fanout.flush()
        tail_state = feed.tail
        found = await _find_resumption(feed, last_id) if last_id is not None else None
        opening = b""
        if isinstance(found, str):
            data = json.dumps({"reason": found, "lastEventId": (last_id or "")[:200]})
            opening = sse.encode_event(line_id(tail_state.inode, tail_state.offset), "reset", data)
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
    if "%2f" in raw_path.lower() or "%5c" in raw_path.lower():
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

    response, transport, framing = await open_sse_response(request)
    if transport is None:
        return response
    topic = path if needle is None else grep_topic(path, needle)
    topics = hub.fanout.shared_topics(frozenset({topic}))
    stream = SseStream(topics, framing, transport, hub.fanout, settings.max_buffer)
    hub.catching_up.add(transport)  # until it is live: see end_catch_ups
    resumption: Resumption | None = None
    try:
        with client_may_leave(transport):
            async with hub.follow(str(settings.logs), path, needle) as feed:
                opening, resumption = await _register(request, feed, stream, tail, needle)
                # ": connected" only now: a client that sees it and appends gets that line
                await response.write(sse.encode_preamble(settings.retry) + opening)
                if resumption is not None:
                    await resumption.catch_up(response, feed, hub.max_line, needle)
                hub.catching_up.discard(transport)
                stream.go_live()
                if await stream.closed == "shutdown":  # inline: a helper coroutine would stay alive
                    await response.write_eof()  # for the life of every idle stream
    finally:
        hub.catching_up.discard(transport)
        hub.fanout.remove(stream)
        if resumption is not None:
            os.close(resumption.fd)
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
            if feed.path in changed or feed.tail.real in changed:
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
