"""A small SSE reader over an aiohttp response, for tests: exact text plus parsed events."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator

import aiohttp

from streamer.sse import ParsedEvent, parse_stream


class EventStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.text = ""
        self.ended = False
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    @property
    def events(self) -> list[ParsedEvent]:
        return list(parse_stream(self.text))

    async def _read_more(self, timeout: float) -> None:
        chunk = await asyncio.wait_for(self.response.content.readany(), timeout)
        if not chunk:
            self.ended = True
            raise EOFError("stream ended")
        self.text += self._decoder.decode(chunk)

    async def wait_text(self, needle: str, timeout: float = 5.0) -> str:
        async with asyncio.timeout(timeout):
            while needle not in self.text:
                await self._read_more(timeout)
        return self.text

    async def wait_new_text(self, needle: str, timeout: float = 5.0) -> str:
        """Wait for ``needle`` to arrive after what was read so far (a next heartbeat)."""
        start = len(self.text)
        async with asyncio.timeout(timeout):
            while needle not in self.text[start:]:
                await self._read_more(timeout)
        return self.text

    async def wait_events(self, count: int, timeout: float = 5.0) -> list[ParsedEvent]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                await self._read_more(timeout)
        return self.events

    async def wait_end(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.ended:
                try:
                    await self._read_more(timeout)
                except EOFError:
                    return


@contextlib.asynccontextmanager
async def subscribe(
    http: aiohttp.ClientSession,
    base_url: str,
    *topics: str,
    last_event_id: str | None = None,
    query: dict[str, str] | None = None,
) -> AsyncIterator[EventStream]:
    """Open ``GET /events`` and wait for the ``: connected`` comment (the stream is live)."""
    params: list[tuple[str, str]] = [("topic", t) for t in topics]
    params += list((query or {}).items())
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with http.get(f"{base_url}/events", params=params, headers=headers) as response:
        assert response.status == 200, await response.text()
        stream = EventStream(response)
        await stream.wait_text(": connected\n\n")
        yield stream
