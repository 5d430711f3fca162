"""What the log tests share: following a tail until it is live, appending to a log."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from .sse_client import EventStream


@contextlib.asynccontextmanager
async def tail(
    http: aiohttp.ClientSession,
    server: str,
    name: str = "app.log",
    last_event_id: str | None = None,
    **query: str,
) -> AsyncIterator[EventStream]:
    """Open ``/logs/name`` and wait until it is live (``: connected`` comes after that)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with http.get(f"{server}/logs/{name}", params=query, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        stream = EventStream(response)
        await stream.wait_text(": connected\n\n")
        yield stream


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as log:
        log.write(data)
