"""The event hub over a real server: framing, topics, resume, reset, heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
import pytest

from streamer.sse import ParsedEvent, parse_stream

from .conftest import StartServer
from .helpers import host_port, publish, read_until, subscriber_count, wait_for
from .sse_client import subscribe

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


async def test_stream_headers_and_preamble(server: str, http: aiohttp.ClientSession) -> None:
    async with subscribe(http, server) as stream:
        headers = stream.response.headers
        assert headers["Content-Type"] == SSE_CONTENT_TYPE
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in headers
        assert headers["X-Request-ID"]
        assert stream.text == "retry: 2000\n: connected\n\n"


async def test_published_events_arrive_byte_exact(server: str, http: aiohttp.ClientSession) -> None:
    async with subscribe(http, server, "news") as stream:
        id1 = await publish(http, server, "news", json_body={"a": 1, "b": [1, 2], "c": "\u00e9"})
        id2 = await publish(http, server, "news", "line one\r\nline two\rthree\n", event="note")
        id3 = await publish(http, server, "news", "")
        id4 = await publish(http, server, "news", "h\u00e9llo \U0001f600".encode())
        await stream.wait_events(4)
        assert stream.text == (
            "retry: 2000\n: connected\n\n"
            f'id: {id1}\nevent: message\ndata: {{"a":1,"b":[1,2],"c":"\u00e9"}}\n\n'
            f"id: {id2}\nevent: note\ndata: line one\ndata: line two\ndata: three\ndata: \n\n"
            f"id: {id3}\nevent: message\ndata: \n\n"
            f"id: {id4}\nevent: message\ndata: h\u00e9llo \U0001f600\n\n"
        )


async def test_ids_increase_strictly(server: str, http: aiohttp.ClientSession) -> None:
    ids = [await publish(http, server, "t", str(n)) for n in range(5)]
    keys = [tuple(int(part) for part in i.split("-")) for i in ids]
    assert keys == sorted(keys)
    assert len(set(keys)) == 5


async def test_multi_topic_stream_filters(server: str, http: aiohttp.ClientSession) -> None:
    async with (
        subscribe(http, server, "a", "b") as ab,
        subscribe(http, server, "c") as c,
        subscribe(http, server) as everything,
    ):
        for topic in ["a", "c", "b", "x", "a"]:
            await publish(http, server, topic, f"to {topic}")
        assert [e.data for e in await ab.wait_events(3)] == ["to a", "to b", "to a"]
        assert [e.data for e in await c.wait_events(1)] == ["to c"]
        assert [e.data for e in await everything.wait_events(5)] == [
            "to a",
            "to c",
            "to b",
            "to x",
            "to a",
        ]
        # Nothing else arrived for the filtered streams after everything had its 5.
        await publish(http, server, "c", "marker")
        await c.wait_events(2)
        assert [e.data for e in ab.events] == ["to a", "to b", "to a"]


async def test_resume_while_publishing_loses_and_duplicates_nothing(
    server: str, http: aiohttp.ClientSession
) -> None:
    total = 300
    published: list[str] = []

    async def publisher() -> None:
        for n in range(total):
            published.append(await publish(http, server, "feed", str(n)))

    received: list[ParsedEvent] = []
    task = asyncio.create_task(publisher())
    try:
        last_id = None
        for _round in range(3):  # connect, read a little, drop, resume with Last-Event-ID
            async with subscribe(http, server, "feed", last_event_id=last_id) as stream:
                target = min(total, len(received) + 60)
                events = await stream.wait_events(target - len(received), timeout=10)
                received.extend(events)
                last_id = received[-1].id
        async with subscribe(http, server, "feed", last_event_id=last_id) as stream:
            await task
            received.extend(await stream.wait_events(total - len(received), timeout=10))
    finally:
        await task
    assert [e.data for e in received] == [str(n) for n in range(total)]
    assert [e.id for e in received] == published


async def test_resume_with_query_parameter(server: str, http: aiohttp.ClientSession) -> None:
    first = await publish(http, server, "q", "one")
    await publish(http, server, "q", "two")
    await publish(http, server, "other", "not for q")
    await publish(http, server, "q", "three")
    async with subscribe(http, server, "q", query={"lastEventId": first}) as stream:
        assert [e.data for e in await stream.wait_events(2)] == ["two", "three"]
        await publish(http, server, "q", "live")
        assert [e.data for e in await stream.wait_events(3)] == ["two", "three", "live"]


async def test_header_wins_over_query(server: str, http: aiohttp.ClientSession) -> None:
    first = await publish(http, server, "q", "one")
    second = await publish(http, server, "q", "two")
    async with subscribe(
        http, server, "q", last_event_id=second, query={"lastEventId": first}
    ) as stream:
        await publish(http, server, "q", "three")
        assert [e.data for e in await stream.wait_events(1)] == ["three"]


async def test_resume_from_head_replays_nothing(server: str, http: aiohttp.ClientSession) -> None:
    head = await publish(http, server, "q", "one")
    async with subscribe(http, server, last_event_id=head) as stream:
        await publish(http, server, "q", "two")
        assert [e.data for e in await stream.wait_events(1)] == ["two"]
        assert "reset" not in stream.text


def reset_of(text: str) -> dict[str, str]:
    events = [e for e in parse_stream(text) if e.event == "reset"]
    assert len(events) == 1, text
    reset: dict[str, str] = json.loads(events[0].data)
    return reset


async def test_reset_cases(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(history=5)
    ids = [await publish(http, server, "r", str(n)) for n in range(12)]
    epoch = ids[0].split("-")[0]
    head = ids[-1]
    cases = {
        "malformed": "not-an-id",
        "epoch": f"{int(epoch) - 1}-3",  # from an earlier run of the server
        "unknown": f"{epoch}-999",
        "too-old": ids[2],
    }
    for reason, last_id in cases.items():
        async with subscribe(http, server, "r", last_event_id=last_id) as stream:
            head = ids[-1]
            await stream.wait_events(1)
            assert stream.text == (
                "retry: 2000\n: connected\n\n"
                f"id: {head}\nevent: reset\n"
                f'data: {{"reason":"{reason}","lastEventId":"{last_id}"}}\n\n'
            )
            ids.append(await publish(http, server, "r", "after reset"))
            events = await stream.wait_events(2)
            assert events[1] == ParsedEvent(ids[-1], "message", "after reset")
    # History holds the last 5 events; resuming from the oldest of them replays
    # the 4 after it, then live events follow.
    async with subscribe(http, server, "r", last_event_id=ids[-5]) as stream:
        live = await publish(http, server, "r", "live")
        events = await stream.wait_events(5)
        assert [e.id for e in events] == [*ids[-4:], live]


async def test_restart_gives_reset_and_new_ids(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    first = await start_server()
    old = await publish(http, first, "r", "before restart")
    await asyncio.sleep(0.002)  # epochs are milliseconds: a restart within 1 ms is not real
    second = await start_server()
    new = await publish(http, second, "r", "after restart")
    assert tuple(map(int, new.split("-"))) > tuple(map(int, old.split("-")))
    async with subscribe(http, second, "r", last_event_id=old) as stream:
        await stream.wait_events(1)
        assert reset_of(stream.text)["reason"] == "epoch"


async def test_heartbeat_when_idle(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(heartbeat=0.1)
    async with subscribe(http, server) as stream:
        await stream.wait_text(": connected\n\n: ping\n\n: ping\n\n", timeout=2)


async def test_dead_client_is_removed_promptly(server: str, http: aiohttp.ClientSession) -> None:
    reader, writer = await asyncio.open_connection(*server.removeprefix("http://").split(":"))
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b": connected\n\n")
    assert await subscriber_count(http, server) == 1
    writer.close()
    await writer.wait_closed()

    async def gone() -> bool:
        return await subscriber_count(http, server) == 0

    await wait_for(gone, timeout=1.0)


async def test_many_subscribers_all_get_every_event(
    server: str, http: aiohttp.ClientSession
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(subscribe(http, server, "m")) for _ in range(20)]
        ids = [await publish(http, server, "m", str(n)) for n in range(10)]
        for stream in streams:
            assert [e.id for e in await stream.wait_events(10)] == ids


async def test_every_stream_gets_an_access_log_line_with_its_bytes(
    server: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(b"GET /events HTTP/1.1\r\nHost: t\r\nX-Request-ID: stream-log-1\r\n\r\n")
    await read_until(reader, b"\r\n\r\n")
    body = await read_until(reader, b": connected\n\n\r\n")
    await publish(http, server, "t", "counted")
    body += await read_until(reader, b"data: counted\n\n\r\n")
    writer.close()  # the client goes away: the stream ends and is logged like any request
    await writer.wait_closed()

    def logged() -> bool:
        return any("stream-log-1" in r.getMessage() for r in caplog.records)

    await wait_for(logged, timeout=2)
    lines = [r.getMessage() for r in caplog.records if "stream-log-1" in r.getMessage()]
    assert len(lines) == 1
    assert f'"GET /events HTTP/1.1" 200 {len(body)} ' in lines[0]


async def test_an_event_published_as_soon_as_the_headers_arrive_is_delivered(
    server: str, http: aiohttp.ClientSession
) -> None:
    """EventSource fires ``open`` on the headers: a subscriber is registered before them."""
    for attempt in range(10):
        reader, writer = await asyncio.open_connection(*host_port(server))
        writer.write(b"GET /events?topic=early HTTP/1.1\r\nHost: t\r\n\r\n")
        await read_until(reader, b"\r\n\r\n")
        await publish(http, server, "early", f"right after the headers {attempt}")
        await read_until(reader, f"data: right after the headers {attempt}\n\n".encode())
        writer.close()
        await writer.wait_closed()
