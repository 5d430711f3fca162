"""Changes in the media folder as ``files`` events: what is announced, and how a file
that keeps growing is coalesced into a few events."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest
from watchfiles import Change

from streamer.sources.media import MediaEvents

from .conftest import StartServer
from .sse_client import subscribe


class Published:
    """Records what :class:`MediaEvents` publishes, with when."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, object]]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, topic: str, data: str, event: str) -> None:
        assert topic == "files"
        self.events.append((time.monotonic(), event, json.loads(data)))
        self.arrived.set()

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()

    @property
    def names(self) -> list[str]:
        return [name for _, name, _ in self.events]


async def test_a_growing_file_is_one_created_then_at_most_one_modified_per_interval(
    tmp_path: Path,
) -> None:
    published = Published()
    media = MediaEvents(str(tmp_path), published, interval=0.2, tick=0.01)
    path = tmp_path / "big.bin"
    try:
        path.write_bytes(b"")
        await media.on_changes({(Change.added, str(path))})
        started = time.monotonic()
        while time.monotonic() - started < 0.5:  # a writer appending for half a second
            await asyncio.to_thread(_append, path, b"x" * 1000)
            await media.on_changes({(Change.modified, str(path))})
            await asyncio.sleep(0.005)
        final_size = path.stat().st_size
        await published.wait(2)
        assert media._ticker is not None
        await asyncio.wait_for(media._ticker, 2)  # ends once nothing is held or remembered
    finally:
        await media.close()
    names = published.names
    assert names[0] == "created"
    assert set(names[1:]) == {"modified"}
    assert 2 <= len(names) - 1 <= 4  # 0.5 s of writes, one per 0.2 s, then the last one
    times = [when for when, name, _ in published.events if name == "modified"]
    assert all(b - a >= 0.2 - 0.02 for a, b in itertools.pairwise(times))
    assert published.events[-1][2] == {"path": "big.bin", "size": final_size, "type": "file"}


def _write_in_pieces(path: Path, mebibytes: int) -> None:
    """Like a download or a copy: 1 MiB writes, each a kernel notification of its own."""
    with open(path, "wb") as file:
        for _ in range(mebibytes):
            file.write(os.urandom(1 << 20))
            file.flush()
            os.fsync(file.fileno())


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


async def test_created_and_deleted_go_out_at_once_and_drop_a_held_modified(
    tmp_path: Path,
) -> None:
    published = Published()
    media = MediaEvents(str(tmp_path), published, interval=10, tick=0.01)
    path = tmp_path / "a.txt"
    try:
        path.write_text("one")
        await media.on_changes({(Change.added, str(path))})
        await media.on_changes({(Change.modified, str(path))})  # held: within the interval
        path.unlink()
        await media.on_changes({(Change.deleted, str(path))})
        path.write_text("again")
        await media.on_changes({(Change.added, str(path))})
        await published.wait(3)
        assert media._held == {}  # the "modified" held before the delete is gone for good
    finally:
        await media.close()
    assert published.names == ["created", "deleted", "created"]
    assert published.events[1][2] == {"path": "a.txt", "size": None, "type": "file"}


@pytest.mark.parametrize("name", [".hidden", "sub/.git/config", "../outside.txt"])
async def test_hidden_or_outside_paths_are_not_announced(tmp_path: Path, name: str) -> None:
    published = Published()
    media = MediaEvents(str(tmp_path / "media"), published)
    await media.on_changes({(Change.added, str(tmp_path / "media" / name))})
    await media.close()
    assert published.events == []


async def test_media_changes_become_files_events(
    start_server: StartServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    server = await start_server(media=media.resolve())
    async with subscribe(http, server, "files") as stream:
        (media / "new.txt").write_text("hello")
        await stream.wait_text('"path":"new.txt"')
        (media / ".hidden").write_text("x")
        (media / "new.txt").unlink()
        await stream.wait_text("event: deleted\n")
    kinds = [(e.event, e.data) for e in stream.events]
    assert ("created", '{"path":"new.txt","size":5,"type":"file"}') in kinds or (
        "modified",
        '{"path":"new.txt","size":5,"type":"file"}',
    ) in kinds
    assert ("deleted", '{"path":"new.txt","size":null,"type":"file"}') in kinds
    assert not any(".hidden" in data for _, data in kinds)


async def test_writing_a_big_file_is_a_few_events_not_one_per_write(
    start_server: StartServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    server = await start_server(media=media.resolve())
    size = 40 << 20
    async with subscribe(http, server, "files") as stream:
        await asyncio.to_thread(_write_in_pieces, media / "big.bin", 40)
        final = f'{{"path":"big.bin","size":{size},"type":"file"}}'
        await stream.wait_text(f"event: modified\ndata: {final}\n\n", timeout=5)
    events = [(e.event, e.data) for e in stream.events]
    assert events[0][0] == "created"
    assert events[-1] == ("modified", final)
    assert len(events) <= 5, events


async def test_a_batch_with_delete_and_add_of_one_path_is_one_event_by_its_state(
    tmp_path: Path,
) -> None:
    """A watch batch is a set: "deleted" and "added" of one path come in no order.
    What the path is now decides: it exists, so it was created (once)."""
    published = Published()
    media = MediaEvents(str(tmp_path), published)
    path = tmp_path / "b.txt"
    path.write_text("x")
    try:
        await media.on_changes({(Change.deleted, str(path)), (Change.added, str(path))})
        path.unlink()
        await media.on_changes({(Change.added, str(path)), (Change.deleted, str(path))})
        await published.wait(2)
    finally:
        await media.close()
    assert published.names == ["created", "deleted"]
    assert published.events[0][2] == {"path": "b.txt", "size": 1, "type": "file"}
    assert published.events[1][2] == {"path": "b.txt", "size": None, "type": "file"}
