"""The log hub's feeds: how one file's tail is handed from a closing feed to a new one."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from streamer.sources import loghub
from streamer.sources.logtail import Tail, TailEvent

from .helpers import RecordingSink, wait_for


async def test_a_poll_that_outlives_its_feed_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last subscriber leaves while a poll is reading, and a new one (a reconnect)
    follows the same file at once: the new feed starts after the lines that poll read, so
    the new subscriber has them already (its catch-up) or never asked for them. Were the
    old poll to publish them on the shared topic too, they would arrive twice (seen once in
    ``bench/hostile.py``: one log line duplicated across a Last-Event-ID resume)."""
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    reading, release = threading.Event(), threading.Event()
    real_poll = loghub._poll_once

    def poll_held_in_its_thread(tail: Tail) -> tuple[list[TailEvent], bool]:
        reading.set()
        release.wait(5)
        return real_poll(tail)

    monkeypatch.setattr(loghub, "_poll_once", poll_held_in_its_thread)
    hub = loghub.LogHub()
    first = contextlib.AsyncExitStack()
    old = await first.enter_async_context(hub.follow(str(tmp_path), str(path), None))
    with path.open("ab") as file:
        file.write(b"read by the old feed\n")
    polling = asyncio.create_task(hub.poll(old))
    assert await asyncio.to_thread(reading.wait, 5)
    leaving = asyncio.create_task(first.aclose())  # waits for the poll to free the lock
    await wait_for(lambda: str(path) not in hub.feeds)

    monkeypatch.setattr(loghub, "_poll_once", real_poll)
    async with hub.follow(str(tmp_path), str(path), None) as new:
        assert new is not old
        sink = RecordingSink(frozenset({str(path)}))
        hub.fanout.add(sink)
        release.set()
        await asyncio.wait_for(asyncio.gather(polling, leaving), 5)
        hub.fanout.flush()
        assert sink.writes == []

        with path.open("ab") as file:
            file.write(b"live\n")
        await hub.poll(new)
        hub.fanout.flush()
        assert b"".join(sink.writes).count(b"data: ") == 1
        assert b"data: live\n" in b"".join(sink.writes)
