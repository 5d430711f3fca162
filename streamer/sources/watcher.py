"""The one ``watchfiles`` task of the app: folder changes in, callbacks out.

Folders, not files, are watched, so a log rotated away and created again is
still seen. ``awatch`` is tuned for latency: its defaults wait up to 1.6 s
(``debounce``) to batch changes and 50 ms (``step``) for quiet; here a batch
is handed over after :data:`STEP_MS` of quiet or :data:`DEBOUNCE_MS` at most
(measured: see BENCHMARKS.md). Notifications can be coalesced, or dropped
when the kernel's inotify queue overflows, so ``on_rescan`` also runs every
``rescan_interval`` seconds whatever happens (a ``stat`` per followed file).
If the OS refuses to watch (inotify limits), the watcher falls back to
polling and says so once. A change to a file whose name is not UTF-8 makes
``watchfiles`` give up (it cannot hand such a name over); the watch is then
started again after ``rescan_interval`` and a rescan, instead of ending for
good and taking every live tail and media event with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from watchfiles import Change, awatch

log = logging.getLogger("streamer.watcher")

DEBOUNCE_MS: Final = 10
STEP_MS: Final = 1
POLL_DELAY_MS: Final = 50  # only when falling back to polling
UNDECODABLE: Final = "Unable to decode path"  # watchfiles' error for a name that is not UTF-8

Changes = set[tuple[Change, str]]


class Watcher:
    """Runs until cancelled; never raises on changes it cannot handle, only logs them."""

    def __init__(
        self,
        folders: Sequence[str],
        on_changes: Callable[[Changes], Awaitable[None]],
        on_rescan: Callable[[], Awaitable[None]],
        rescan_interval: float = 1.0,
    ) -> None:
        self.folders = list(folders)
        self.on_changes = on_changes
        self.on_rescan = on_rescan
        self.rescan_interval = rescan_interval
        self.polling = False

    async def run(self) -> None:
        # watchfiles logs every batch at INFO; with the server's own log in a watched
        # folder, each such line would be a change that makes another line.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        undecodable = 0
        while True:
            try:
                await self._watch()
                return
            except (OSError, RuntimeError) as exc:
                if UNDECODABLE in str(exc):
                    undecodable += 1
                    await self._restart_after_undecodable(exc, undecodable)
                    continue
                if self.polling:
                    raise
                log.warning(
                    "cannot watch %s (%s); polling every %d ms instead",
                    ", ".join(self.folders),
                    exc,
                    POLL_DELAY_MS,
                )
                self.polling = True

    async def _restart_after_undecodable(self, exc: Exception, times: int) -> None:
        # said once at warning, then at debug: a file written on and on would flood the log
        log.log(
            logging.WARNING if times == 1 else logging.DEBUG,
            "watching again after a change to a file name that is not UTF-8 (%s)",
            exc,
        )
        await asyncio.sleep(self.rescan_interval)  # at most one restart per rescan interval
        await self._safely(self.on_rescan())  # what changed meanwhile

    async def _watch(self) -> None:
        try:
            await self._watch_changes()
        except BaseExceptionGroup as group:  # awatch runs in an anyio task group
            raise _single(group) from None

    async def _watch_changes(self) -> None:
        last_rescan = time.monotonic()
        watch = awatch(
            *self.folders,
            watch_filter=None,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=int(self.rescan_interval * 1000),
            yield_on_timeout=True,
            force_polling=self.polling,
            poll_delay_ms=POLL_DELAY_MS,
            ignore_permission_denied=True,
        )
        async for changes in watch:
            if changes:
                await self._safely(self.on_changes(changes))
            now = time.monotonic()
            if now - last_rescan >= self.rescan_interval:
                last_rescan = now
                await self._safely(self.on_rescan())

    @staticmethod
    async def _safely(work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            log.exception("error while handling file changes")


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside ``group`` (nested groups unwrapped), else the group itself."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
