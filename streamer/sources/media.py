"""Changes in the media folder, published as events on the ``files`` topic.

Event names are ``created``, ``modified`` and ``deleted``; the data is
``{"path", "size", "type"}`` as the file is when the event is sent. The
kernel reports a growing file once per write, so writing one 100 MB file
would be about a hundred ``modified`` events; here they are coalesced per
path: ``created`` and ``deleted`` go out at once, ``modified`` at most once
per :data:`INTERVAL` per path (the first at once, the rest held and sent
when the interval since the path's previous event is over), so the final
size is always announced within about a second of the last write. The
memory broker keeps this topic's history in a lane of its own (:data:`HISTORY`),
so a burst of file changes cannot push published events out of resume
history (the Redis broker has one stream for every topic). With several
workers or hosts each watches the folder, and only the elected one publishes
(:func:`led_by`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from watchfiles import Change

from ..broker import Broker
from ..errors import BrokerClosed, BrokerUnavailable
from ..paths import clean_parts

log = logging.getLogger("streamer.media")

TOPIC: Final = "files"
HISTORY: Final = 1000  # events of this topic kept for resume, apart from the others
INTERVAL: Final = 1.0  # seconds between two "modified" events of one path
TICK: Final = 0.1  # how often held "modified" events are looked at
EVENT_NAMES: Final = {
    Change.added: "created",
    Change.modified: "modified",
    Change.deleted: "deleted",
}

Publish = Callable[[str, str, str], Awaitable[Any]]  # (topic, data, event name)


def led_by(broker: Broker) -> Publish:
    """Publish through ``broker`` only while this process leads: every worker (and host)
    watches the media folder, and each change must still be one event."""

    async def publish(topic: str, data: str, event: str) -> None:
        if broker.leads():
            await broker.publish(topic, data, event)

    return publish


def relative_name(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators, or ``None`` if it is outside
    or hidden (what ``/files/`` would not serve is not announced either)."""
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    if rel.startswith("..") or clean_parts(rel) is None:
        return None
    return rel


def describe(root: str, rel: str) -> str:
    """The event data for ``rel`` as it is now (``size`` is ``None`` for folders and for
    what is gone)."""
    size = None
    kind = "file"
    with contextlib.suppress(OSError):
        st = os.stat(os.path.join(root, rel))
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return json.dumps({"path": rel, "size": size, "type": kind}, separators=(",", ":"))


def _change_now(root: str, rel: str, seen: set[Change]) -> Change:
    """The one change a batch's ``seen`` changes of ``rel`` amount to, by what it is now
    (a ``stat``, like :func:`describe`: cheap, on the loop)."""
    if not os.path.lexists(os.path.join(root, rel)):
        return Change.deleted
    return Change.added if Change.added in seen else Change.modified


class MediaEvents:
    """Turns the watcher's changes under ``root`` into coalesced ``files`` events."""

    def __init__(
        self, root: str, publish: Publish, interval: float = INTERVAL, tick: float = TICK
    ) -> None:
        self.root = root
        self.publish = publish
        self.interval = interval
        self.tick = tick
        self._last: dict[str, float] = {}  # path -> when its last event went out
        self._held: dict[str, None] = {}  # paths with a "modified" waiting, in order
        self._ticker: asyncio.Task[None] | None = None

    async def on_changes(self, changes: set[tuple[Change, str]]) -> None:
        """One event per path and batch, decided by what the path is now: a batch can hold
        ``deleted`` and ``added`` of one path in no particular order (a set)."""
        prefix = self.root + os.sep
        kinds: dict[str, set[Change]] = {}
        for change, path in changes:
            if path.startswith(prefix):
                rel = relative_name(self.root, path)
                if rel is not None:
                    kinds.setdefault(rel, set()).add(change)
        for rel in sorted(kinds):
            try:
                await self._on_change(_change_now(self.root, rel, kinds[rel]), rel)
            except BrokerClosed:
                raise
            except BrokerUnavailable as exc:
                log.warning("cannot publish the change of %s: the broker is away (%s)", rel, exc)
            except Exception:  # one path's trouble must not lose the rest of the batch
                log.exception("cannot publish the change of %s", rel)

    async def _on_change(self, change: Change, rel: str) -> None:
        now = time.monotonic()
        if change is Change.modified:
            last = self._last.get(rel)
            if last is not None and now - last < self.interval:
                self._held[rel] = None
                self._start_ticker()
                return
        else:
            self._held.pop(rel, None)  # created or deleted: a held "modified" is stale
        await self._send(EVENT_NAMES[change], rel, now)

    async def _send(self, name: str, rel: str, now: float) -> None:
        self._last[rel] = now
        self._start_ticker()  # it forgets the path once the interval is over
        await self.publish(TOPIC, describe(self.root, rel), name)

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_loop(), name="streamer-media-events")

    async def _tick_loop(self) -> None:
        """Send held events whose interval is over; forget paths quiet for an interval."""
        try:
            while self._last:
                await asyncio.sleep(self.tick)
                now = time.monotonic()
                for rel in list(self._held):
                    if now - self._last[rel] >= self.interval:
                        del self._held[rel]
                        try:
                            await self._send("modified", rel, now)
                        except BrokerClosed:
                            raise
                        except BrokerUnavailable as exc:
                            log.warning("cannot publish the change of %s: %s", rel, exc)
                        except Exception:
                            log.exception("cannot publish the change of %s", rel)
                for rel, last in list(self._last.items()):
                    if rel not in self._held and now - last >= self.interval:
                        del self._last[rel]
        except BrokerClosed:  # shutting down: nothing can be published any more
            return

    async def close(self) -> None:
        """Stop; held events are dropped (the server is going away)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
