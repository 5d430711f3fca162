"""What the watcher's changes become: polls of the followed logs, and media events.

:func:`watching` runs the app's one :class:`~streamer.sources.watcher.Watcher`
over the media folder and the logs folder for as long as its block lasts, and
stops it, the polls it started and the media events cleanly on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from .loghub import LogHub
from .media import MediaEvents
from .watcher import Changes, Watcher


class ChangeRouter:
    """Hands each batch of changes to whoever cares: the log hub's feeds (a poll each, in
    the background) and the media events."""

    def __init__(self, hub: LogHub, media: MediaEvents) -> None:
        self.hub = hub
        self.media = media
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_changes(self, changes: Changes) -> None:
        changed = {path for _, path in changes}
        for feed in list(self.hub.feeds.values()):
            if feed.path in changed or feed.tail.real in changed:
                self._spawn(self.hub.poll(feed))
        await self.media.on_changes(changes)

    async def on_rescan(self) -> None:
        self._spawn(self.hub.poll_all())

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def watching(folders: Sequence[str], hub: LogHub, media: MediaEvents) -> AsyncIterator[None]:
    """Watch ``folders`` while the block runs; on exit stop the watcher, then the polls
    and media events it started, then close the hub's files."""
    router = ChangeRouter(hub, media)
    watcher = Watcher(folders, router.on_changes, router.on_rescan)
    task = asyncio.create_task(watcher.run(), name="streamer-watcher")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await router.close()
        await media.close()
        hub.close()
